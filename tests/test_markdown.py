"""Markdown helpers of the report (dlib.tools.markdown): numbers, tables, GitHub anchors."""

import pytest

from dlib.tools import markdown


@pytest.mark.parametrize("value, text", [("0.7625468", "0.7625"), ("56.5017", "56.5"), ("134.347", "134.3"),
                                         ("23197.19", "23197"), ("3.0", "3"), ("", ""), ("nan", ""),
                                         ("2007_000170", "2007_000170"), ("(4,)", "(4,)"), (1e-7, "1.00e-07"),
                                         ("-0.4", "-0.4"), ("12", "12")])
def test_format_number(value, text):
    assert markdown.format_number(value) == text


def test_markdown_table_escapes_pipes():
    table = markdown.markdown_table(["a|b", "c"], [["x|y", "1.50"]])
    assert table.splitlines()[0] == "| a\\|b | c |" and table.splitlines()[2] == "| x\\|y | 1.5 |"


def test_github_slug():
    seen = {}
    assert markdown.github_slug("05 — Training DeepLab-LargeFOV", seen) == "05--training-deeplab-largefov"
    assert markdown.github_slug("05 — Training DeepLab-LargeFOV", seen) == "05--training-deeplab-largefov-1"
