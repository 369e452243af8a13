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


def test_postgresql_gets_texts_without_nul_nor_its_json_escape() -> None:
    from rulekit.store.sql.postgres_dialect import POSTGRES, storable_text

    assert storable_text("a\x00b") == "a\ufffdb"
    assert storable_text('{"t": "a\\u0000b"}') == '{"t": "a\\ufffdb"}'
    # an escaped backslash before "u0000" is text, not an escape
    assert storable_text('{"t": "C:\\\\u0000"}') == '{"t": "C:\\\\u0000"}'
    assert storable_text('{"t": "\\\\\\u0000"}') == '{"t": "\\\\\\ufffd"}'
    params = {"a": "x\x00", "b": 1, "c": ["\x00"], "d": b"\x00"}
    assert POSTGRES.parameters(params) == {"a": "x\ufffd", "b": 1, "c": ["\ufffd"], "d": b"\x00"}
    clean = {"a": "x"}
    assert POSTGRES.parameters(clean) is clean
