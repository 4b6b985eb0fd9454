"""Training: the resumable SGD loop, the poly and step learning-rate schedules, the summed MSC loss, the checks
before a training starts (crop, memory, one training per folder) and torchrun set-up."""
