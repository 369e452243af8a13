"""Regular expressions: Ansible's tests and filters, on RE2 (linear time), checked and compiled
when rules load, within the render's budget."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from typing import Any

import pytest
from scaffold import make_event

from rulekit.errors import TemplateError, ValidationErrors
from rulekit.expr import patterns, regex
from rulekit.expr.budget import Limits, OverBudget, with_budget


def _rule(condition: str | None, text: str) -> str:
    # single-quoted YAML: backslashes reach the expression as written
    quoted = text.replace("'", "''")
    when = "" if condition is None else f"  if: ['{condition.replace(chr(39), chr(39) * 2)}']\n"
    return (
        f"- name: r\n  on: {{channel: online-chat}}\n{when}"
        f"  do:\n    - telegram: {{chat_id: '1', text: '{quoted}'}}\n"
    )


@pytest.fixture
def holds(build_engine: Any) -> Any:
    def holds(condition: str, text: str | None) -> bool:
        engine = build_engine(_rule(condition, "yes"))
        plan = engine.evaluate(make_event(event="message", message={"text": text}))
        return bool(plan)

    return holds


@pytest.fixture
def render(build_engine: Any) -> Any:
    def render(template: str, text: str | None) -> str:
        engine = build_engine(_rule(None, template))
        plan = engine.evaluate(make_event(event="message", message={"text": text}))
        assert not plan.errors, plan.errors
        return str(plan[0].params["text"])

    return render


# -- Ansible's semantics --------------------------------------------------------------------


def test_match_is_anchored_at_the_start_and_search_is_not(holds: Any) -> None:
    assert holds("message.text is match('order')", "order 12")
    assert not holds("message.text is match('order')", "my order 12")
    assert holds("message.text is search('order')", "my order 12")
    assert holds("message.text is match('ord')", "order 12")  # not anchored at the end
    assert not holds("message.text is search('ORDER')", "my order")
    assert holds("message.text is search('ORDER', ignorecase=true)", "my order")
    assert not holds("message.text is search('^12$')", "order\n12")
    assert holds("message.text is search('^12$', multiline=true)", "order\n12")
    assert holds("message.text is not search('refund')", "an order")


def test_missing_text_never_matches(holds: Any, render: Any) -> None:
    assert not holds("message.text is search('.*')", None)
    assert not holds("message.text is match('')", None)
    assert render("[{{ message.text|regex_search('a') }}]", None) == "[]"
    assert render("{{ message.text|regex_findall('a') }}", None) == "[]"
    assert render("[{{ message.text|regex_replace('a', 'b') }}]", None) == "[]"


def test_regex_search_gives_the_match_or_the_groups(render: Any) -> None:
    text = "Order #12345 from bob@example.com"
    assert render("{{ message.text|regex_search('#\\d+') }}", text) == "#12345"
    assert render("{{ message.text|regex_search('(\\w+)@(\\w+)', '\\\\2', '\\\\1') }}", text) == (
        "['example', 'bob']"
    )
    assert render("{{ message.text|regex_search('(?P<n>\\d+)', '\\\\g<n>')|first }}", text) == (
        "12345"
    )
    assert render("[{{ message.text|regex_search('refund') }}]", text) == "[]"
    assert render("{{ message.text|regex_search('order', ignorecase=true) }}", text) == "Order"


def test_regex_findall_is_pythons_findall(render: Any) -> None:
    text = "a1 b22 c333"
    assert render("{{ message.text|regex_findall('\\d+') }}", text) == "['1', '22', '333']"
    assert render("{{ message.text|regex_findall('([a-z])\\d') }}", text) == "['a', 'b', 'c']"
    assert render("{{ message.text|regex_findall('([a-z])(\\d)') }}", text) == (
        "[('a', '1'), ('b', '2'), ('c', '3')]"
    )


def test_regex_replace_with_groups_count_and_mandatory_count(render: Any) -> None:
    text = "localhost:80"
    named = "'^(?P<host>.+):(?P<port>\\d+)$', '\\\\g<host>, \\\\g<port>'"
    assert render("{{ message.text|regex_replace(" + named + ") }}", text) == "localhost, 80"
    assert render("{{ message.text|regex_replace('(o)', '[\\\\1]', count=1) }}", text) == (
        "l[o]calhost:80"
    )
    assert render("{{ message.text|regex_replace('O', '0', ignorecase=true) }}", text) == (
        "l0calh0st:80"
    )
    assert render("{{ message.text|regex_replace('x*', '-') }}", "ab") == "-a-b-"
    _written(":")
    with pytest.raises(TemplateError, match="1 replacements made, 2 required"):
        with_budget(lambda: regex.regex_replace("a:b", ":", "-", mandatory_count=2))


def _written(*texts: str) -> None:
    """Load ``texts`` as patterns the rules wrote (the functions below run only those)."""
    for text in texts:
        assert patterns.loaded(text) is None


def test_values_are_matched_as_their_text() -> None:
    _written("\\d{5}", "[a-z]{2}")
    assert regex.is_match(12345, "\\d{5}")
    assert regex.regex_findall(["ab", "cd"], "[a-z]{2}") == ["ab", "cd"]


# -- load time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("message.text is match('(a)\\\\1')", "backreference (\\1) is not supported"),
        ("message.text is match('(?P<x>a)(?P=x)')", "backreference ((?P=...) is not supported"),
        ("message.text is search('(?=a)b')", "lookahead ((?=...) is not supported"),
        ("message.text is search('(?<!a)b')", "lookbehind ((?<!...) is not supported"),
        ("message.text is search('[a')", "not a valid RE2 pattern: missing ]"),
        ("message.text is search('a{1001}')", "invalid repetition size"),
        ("message.text is search(client.name)", "must be a literal string"),
        ("message.text|regex_findall(env.X)", "must be a literal string"),
        ("message.text is search", "search needs a pattern"),
    ],
)
def test_patterns_are_checked_when_rules_load(
    build_engine: Any, condition: str, message: str
) -> None:
    with pytest.raises(ValidationErrors) as caught:
        build_engine(_rule(condition, "x"))
    text = str(caught.value)
    assert message in text
    assert "rules.yaml:3:" in text  # file:line of the condition


def test_patterns_that_only_look_like_lookaround_are_plain_re2(holds: Any) -> None:
    assert holds("message.text is search('a\\(?!')", "say a!")
    assert holds("message.text is search('[(?=]')", "=")
    assert not holds("message.text is search('[(?=]')", "x")


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        ("abc\\Z", "xabc", True),  # Python's end of the text is RE2's \z
        ("abc\\Z", "abc\n", False),
        ("\\u00e4+", "xää", True),
        ("\\U0001F600", "a😀", True),
        ("^a{,2}b", "aab", True),  # Python's {,2} is {0,2}; RE2 alone reads it as text
        ("^a{,2}b", "aaab", False),
        ("(?u)\\w+", "abc", True),  # Unicode is the default
        ("^\\w+$", "привет_123", True),  # letters and digits of any script, as in Python
        ("^\\w+$", "naïve", True),
        ("^[\\w-]+$", "Анна-Мария", True),
        ("^[^\\w]+$", "ёж", False),
        ("\\W", "ёж", False),
        ("^\\d+$", "١٢٣", True),  # Arabic-Indic digits are decimal digits
        ("\\D", "١٢٣", False),
        ("a\\sb", "a\u00a0b", True),  # a no-break space is a space
        ("a\\sb", "a\u2003b", True),
        ("a\\Sb", "a\u3000b", False),
        ("(?a)^\\w+$", "привет", False),  # (?a): ASCII only, as in Python
        ("(?a)^\\w+$", "hello", True),
        ("\\\\w", "\\w", True),  # an escaped backslash, then w
        ("\\\\Z", "\\Z", True),  # an escaped backslash, then Z
        ("[{,2}]", ",", True),
        ("^a{,}b$", "aaab", True),  # Python's {,} is any number; RE2 alone reads it as text
        ("^a{,}$", "a{,}", False),
        ("^\\d{04}$", "2024", True),  # leading zeros: RE2 alone reads the repeat as text
        ("^a{,03}$", "aaa", True),
        ("^a{00}b$", "b", True),
        ("^a{}$", "a{}", True),  # not a repeat in either
        ("^a{1,2$", "a{1,2", True),
    ],
)
def test_python_spellings_mean_what_they_mean_in_python(
    pattern: str, text: str, found: bool
) -> None:
    import re

    _written(pattern)
    assert with_budget(lambda: regex.is_search(text, pattern)) is found
    assert bool(re.search(pattern, text)) is found


def test_a_dollar_is_the_very_end_of_the_text(holds: Any) -> None:
    """Unlike Python's, RE2's ``$`` does not also match before a final line break (documented:
    ``\n?$`` does both)."""
    assert not holds("message.text is search('c$')", "abc\n")
    assert holds("message.text is search('c\\n?$')", "abc\n")
    assert holds("message.text is search('c$', multiline=true)", "abc\n")


def test_template_patterns_are_checked_when_rules_load(build_engine: Any) -> None:
    with pytest.raises(ValidationErrors) as caught:
        build_engine(_rule(None, "{{ message.text|regex_replace('(?<=a)b', 'c') }}"))
    assert "rules.yaml:4:" in str(caught.value)
    assert "lookbehind" in str(caught.value)


def test_a_replacement_python_would_refuse_is_a_load_error(build_engine: Any) -> None:
    """Ansible's regex_replace is Python's re.sub: ``\\d`` in a replacement is an error there,
    and here when the rules load, with the file and line."""
    with pytest.raises(ValidationErrors) as caught:
        build_engine(_rule(None, "{{ message.text|regex_replace('(\\d)', '<\\d>') }}"))
    assert "rules.yaml:4:" in str(caught.value)
    assert "bad escape \\d in the replacement" in str(caught.value)
    with pytest.raises(ValidationErrors, match="unterminated"):
        build_engine(_rule(None, "{{ message.text|regex_replace('(\\d)', '\\g<1') }}"))


def test_a_double_quoted_backslash_is_explained(build_engine: Any) -> None:
    rules = (
        "- name: r\n  on: {channel: online-chat}\n  do:\n"
        '    - telegram: {chat_id: "1", text: "{{ message.text|'
        "regex_replace('(a)', '\\\\1') }}\"}\n"
    )
    with pytest.raises(ValidationErrors, match="control character: in a string literal"):
        build_engine(rules)


# -- budget and linear time ----------------------------------------------------------------


def test_what_the_filters_build_is_within_the_budget() -> None:
    small = Limits(value=100, steps=1_000)
    _written("a")
    with pytest.raises(OverBudget, match="regex_findall"):
        with_budget(lambda: regex.regex_findall("a" * 200, "a"), limits=small)
    with pytest.raises(OverBudget, match="regex_replace"):
        with_budget(lambda: regex.regex_replace("a" * 20, "a", "x" * 10), limits=small)
    with pytest.raises(OverBudget, match="steps"):
        with_budget(
            lambda: regex.regex_replace("a" * 50, "a", ""), limits=Limits(value=100, steps=20)
        )
    assert with_budget(lambda: regex.regex_replace("a" * 50, "a", "b"), limits=small) == "b" * 50


def test_an_admins_pattern_against_a_4_mb_client_text_finishes() -> None:
    """Patterns that make a backtracking engine run for longer than the universe exists
    (``(a+)+$`` against many a's and no match) run on a 4 MB text through a loaded rule, in a
    process whose CPU time is limited to a few seconds: it is killed unless RE2 answers."""
    program = textwrap.dedent(
        """
        import resource, sys, pathlib, tempfile
        resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
        from rulekit.engine.engine import Engine
        from rulekit.event import Event
        rules = pathlib.Path(tempfile.mkdtemp()) / "rules.yaml"
        rules.write_text('''
        - name: catastrophic
          on: {channel: online-chat}
          if:
            - "message.text is match('^(a+)+$')"
            - "message.text is search('(x+x+)+y')"
          do: [{telegram: {chat_id: '1', text: "{{ message.text|regex_findall('(a|aa)+!') }}"}}]
        - name: found
          on: {channel: online-chat}
          if: ["message.text is search('(a|aa)+!$')"]
          do: [{telegram: {chat_id: '1', text: "{{ message.text[-3:]|regex_search('a+!') }}"}}]
        ''')
        engine = Engine.from_path(rules)
        text = "a" * (4 * 1024 * 1024) + "!"
        plan = engine.evaluate(Event(channel="online-chat", event="message",
                                     message={"text": text}))
        print([step.rule for step in plan], plan[0].params["text"], plan.errors)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['found'] aa! []"


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("\\\\bпривет\\\\b", "\\b next to a letter outside ASCII"),  # noqa: RUF001
        ("\\\\Bё", "\\B next to a letter outside ASCII"),
        # what may match a letter of another script: \b\w+\b found "caf" in "café"
        ("\\\\b\\\\w+\\\\b", "\\b next to \\w does not fall where Python's does"),
        ("\\\\w{2,}\\\\b", "\\b next to \\w does not fall"),
        ("\\\\b.+", "\\b next to . does not fall"),
        ("x\\\\b[^ ]", "\\b next to [^ ] does not fall"),
        ("\\\\b[a-zé]", "\\b next to [a-zé] does not fall"),
        ("\\\\B\\\\pL", "\\B next to \\pL does not fall"),
        # a POSIX class on RE2; in Python the characters [, :, a, l, p, h, then a ]
        ("[[:alpha:]]+", "[:alpha:] inside [...] is a class of characters on RE2"),
        ("[a[:digit:]]", "[:digit:] inside [...] is a class"),
        ("[^[:^space:]]", "[:^space:] inside [...] is a class"),
        ("[\\W.]+", "\\W inside [...] is not supported"),
        ("[^\\S]", "\\S inside [...] is not supported"),
    ],
)
def test_patterns_that_would_mean_something_else_on_re2_are_refused(
    build_engine: Any, pattern: str, says: str
) -> None:
    """RE2's word boundary is ASCII-only and ``\\W``/``\\S`` in a class have no any-script
    spelling: such a pattern would silently differ from Python's, so it is an error, at its
    file:line."""
    with pytest.raises(ValidationErrors) as caught:
        build_engine(_rule(f"message.text is search('{pattern}')", "x"))
    assert says in str(caught.value)
    assert "rules.yaml:3:" in str(caught.value)


def test_a_word_boundary_beside_ascii_letters_still_works(holds: Any) -> None:
    assert holds("message.text is search('\\\\bcat\\\\b')", "a cat sat")
    assert not holds("message.text is search('\\\\bcat\\\\b')", "concatenate")
    assert holds("message.text is search('\\\\b\\\\d{4}\\\\b')", "order 1234 please")
    assert holds("message.text is search('\\\\s\\\\b[a-z]+')", "a cat")


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        ("(?a)\\\\b\\\\w+\\\\b", "café", "caf"),  # ASCII-only, as Python's with (?a)
        ("(?a)\\\\bпривет", "привет", None),  # noqa: RUF001
        ("(\\\\w+)\\\\b", "ab", "ab"),  # (groups are not looked into)
    ],
)
def test_with_a_leading_a_flag_a_word_boundary_is_pythons_ascii_one(
    build_engine: Any, render: Any, pattern: str, text: str, found: str | None
) -> None:
    import re

    assert render(f"{{{{ message.text|regex_search('{pattern}')|string }}}}", text) == str(found)
    assert (re.search(pattern.replace("\\\\", "\\"), text) or [None])[0] == found


@pytest.mark.parametrize(
    "condition",
    [
        "message.text is search('zq', ignorecase=message.text)",
        "message.text|regex_search('zq', multiline=message.text) == none",
    ],
)
def test_a_flag_given_a_client_value_does_not_make_a_pattern_per_message(
    build_engine: Any, condition: str
) -> None:
    """A flag is true or false: each message given as a flag was its own cache entry, the
    pattern compiled again for every event and the message kept in the cache with it."""
    engine = build_engine(_rule(condition, "yes"))
    engine.evaluate(make_event(event="message", message={"text": "warm " + "y" * 1000}))
    tracemalloc.start()
    try:
        for i in range(8):
            text = f"{i} " + "y" * 300_000
            engine.evaluate(make_event(event="message", message={"text": text}))
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 2**20, kept  # the eight messages (2.4 MB) were kept as the cache's keys


def _pattern_rules(patterns: list[str]) -> str:
    return "".join(
        f"- name: r{i}\n  on: {{channel: online-chat}}\n"
        f"  if: [\"message.text is search('{pattern}')\"]\n"
        "  do: [{autoreply: {text: hi}}]\n"
        for i, pattern in enumerate(patterns)
    )


@pytest.mark.slow
def test_the_patterns_of_the_rules_are_compiled_within_a_budget(build_engine: Any) -> None:
    """Each pattern within RE2's memory may still compile to 300,000 instructions (0.1 s,
    4 MB): a file of a thousand such patterns took minutes and gigabytes to load, and the
    cache of compiled patterns kept them all. Past the budget the load fails at the pattern
    that goes over, and the patterns after it are not compiled."""
    big = [f"\\\\\\\\w{{{200 + i}}}" for i in range(30)]  # \w{200}, \w{201}, ... in the YAML
    with pytest.raises(ValidationErrors) as caught:
        build_engine(_pattern_rules(big))
    errors = [str(error) for error in caught.value.errors]
    first = errors[0]
    assert "rules.yaml:" in first and "the rules' patterns compile to more than" in first
    line = int(first.split("rules.yaml:")[1].split(":")[0])
    over = (line - 3) // 4  # the rule whose pattern went over
    assert 5 < over < 20 and len(errors) == 30 - over, errors
    cached = {key[0] for key in patterns._cache}
    assert f"\\w{{{200 + over}}}" in cached and f"\\w{{{201 + over}}}" not in cached
    assert patterns._cached_instructions <= 2 * patterns.MAX_PROGRAMS + 700_000


def test_a_thousand_distinct_patterns_load_and_one_more_does_not(build_engine: Any) -> None:
    many = [f"order {i}" for i in range(patterns.MAX_PATTERNS)]
    build_engine(_pattern_rules(many + many[:5]))  # the same pattern again counts once
    with pytest.raises(ValidationErrors, match="more than 1000 distinct patterns"):
        build_engine(_pattern_rules([*many, "order 1000"]))


@pytest.mark.parametrize(
    "template",
    [
        "{% for w in message.text.split() %}{{ ['a']|select('search', w)|list }}{% endfor %}",
        "{{ message.text.split()|reject('match', message.text)|list }}",
        "{{ [client]|selectattr('name', 'search', message.text)|list }}",
    ],
)
def test_a_pattern_given_to_select_must_be_literal_too(build_engine: Any, template: str) -> None:
    """``select('search', w)`` ran the test with a pattern made while the event was evaluated:
    each of a client's words compiled by RE2 (up to 0.1 s each, within one step of the budget:
    thirty words held a render for five seconds)."""
    with pytest.raises(ValidationErrors, match="must be a literal string"):
        build_engine(_rule(None, template))


def test_a_pattern_the_rules_did_not_write_is_refused_when_it_runs(
    build_engine: Any, render: Any
) -> None:
    # the test's name given by a value: the pattern cannot be checked when the rules load
    template = "{% set t = message.text[:6] %}{{ ['a']|select(t, message.text[6:])|list }}"
    engine = build_engine(_rule(None, template))
    plan = engine.evaluate(make_event(event="message", message={"text": "search\\w{250}x"}))
    assert list(plan) == []
    assert plan.errors == [
        "rule 'r': telegram: the pattern is not one the rules wrote: a pattern must be a "
        "literal string (patterns are compiled when rules load)"
    ]
    assert render("{{ ['ab', 'b']|select('match', 'a')|list }}", "x") == "['ab']"


_FITS_ONLY_AS_WRITTEN = "[Ā-ɏ]{1000}" * 80
"""RE2 compiles it within its memory as written (320,000 instructions), not ignoring case
(each letter of Latin Extended becomes the class of its two cases)."""


@pytest.mark.parametrize(
    "condition",
    [
        f"message.text is search('{_FITS_ONLY_AS_WRITTEN}', ignorecase=true)",
        f"message.text is match('{_FITS_ONLY_AS_WRITTEN}', true)",
        f"message.text is search('{_FITS_ONLY_AS_WRITTEN}', ignorecase=client.name)",
        f"message.text|regex_findall('{_FITS_ONLY_AS_WRITTEN}', false, true)",
        f"message.text|regex_search('{_FITS_ONLY_AS_WRITTEN}', ignorecase=1)",
        f"message.text|regex_replace('{_FITS_ONLY_AS_WRITTEN}', 'x', true) == ''",
        f"['a']|select('search', '{_FITS_ONLY_AS_WRITTEN}', true)|list",
        f"['a']|select('search', '{_FITS_ONLY_AS_WRITTEN}', ignorecase=true)|list",
    ],
)
def test_a_pattern_is_compiled_with_the_flags_its_rule_gives_it_when_rules_load(
    build_engine: Any, condition: str
) -> None:
    """A pattern was compiled as written when the rules loaded, and with ``ignorecase`` only
    when an event came: one RE2 could not fit ignoring case loaded without a word, and its
    rule never fired (the condition failed on every event, as a "no"). Now the load fails, at
    the condition's file:line, saying so."""
    with pytest.raises(ValidationErrors) as caught:
        build_engine(_rule(condition, "x"))
    text = str(caught.value)
    assert "rules.yaml:3:" in text
    assert "with ignorecase, RE2 cannot compile the pattern: pattern too large" in text


def test_a_pattern_is_compiled_as_written_unless_a_flag_says_otherwise(
    build_engine: Any, holds: Any
) -> None:
    build_engine(_rule(f"message.text is search('{_FITS_ONLY_AS_WRITTEN}')", "x"))
    build_engine(_rule(f"message.text is search('{_FITS_ONLY_AS_WRITTEN}', false)", "x"))
    build_engine(_rule(f"message.text|regex_findall('{_FITS_ONLY_AS_WRITTEN}', true)", "x"))
    # the flags' variants are compiled when the rules load: the events find them cached
    assert holds("message.text is search('ÄBC', ignorecase=client.name)", "xäbc") is False
    assert ("ÄBC", True, False) in patterns._cache and ("ÄBC", False, False) in patterns._cache
