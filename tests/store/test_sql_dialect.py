"""The dialect layer's rewriting of statements for psycopg."""

from __future__ import annotations

from rulekit.store.sql.dialect import pyformat


def test_named_parameters_become_pyformat_and_casts_stay() -> None:
    assert pyformat(":key") == "%(key)s"
    assert (
        pyformat("SELECT :a, :b::json, x::text, '1s', 5 % 2 FROM t WHERE f(:c_1) = :a")
        == "SELECT %(a)s, %(b)s::json, x::text, '1s', 5 %% 2 FROM t WHERE f(%(c_1)s) = %(a)s"
    )


def test_a_colon_inside_a_word_or_before_a_digit_is_not_a_parameter() -> None:
    assert pyformat("SELECT a:b, :1, x::bigint") == "SELECT a:b, :1, x::bigint"
