"""DeepLab v1/v2 replication library."""
