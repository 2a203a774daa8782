"""rewardkit.data.read_preferences: every file format, record shape and bad input, on real files."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardkit.data import DataError, PreferenceExample, read_preferences

HH_HELPFUL = Path(__file__).resolve().parents[1].parent / "shared/data/hh-rlhf/helpful-base.jsonl.gz"


# ---------------------------------------------------------------- helpers


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def hh(*turns: str) -> str:
    """An Anthropic HH transcript: turns alternate Human, Assistant, Human, ..."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def good(i: int) -> dict[str, str]:
    return {"chosen": f"Question {i}? Right {i}.", "rejected": f"Question {i}? Wrong {i}."}


def write_jsonl(path: Path, records: list) -> Path:
    """Write records as JSON lines; a ``bytes`` item is written as that raw line."""
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def starts(text: str) -> str:
    """A ``pytest.raises(match=...)`` pattern: the message starts with this literal text."""
    return "^" + re.escape(text)


def read(path: Path | str, **kwargs) -> tuple[list[PreferenceExample], object]:
    return read_preferences(str(path), **kwargs)


def read_one(tmp_path: Path, record: dict) -> PreferenceExample:
    examples, report = read(write_jsonl(tmp_path / "one.jsonl", [record]))
    assert report.records == report.loaded == 1
    return examples[0]


def sources(examples: list[PreferenceExample]) -> list[str]:
    return [ex.source for ex in examples]


def texts(example: PreferenceExample) -> tuple[str, str]:
    """The chosen and rejected completion, each a single assistant turn."""
    chosen, rejected = example.chosen, example.rejected
    assert len(chosen) == len(rejected) == 1
    assert chosen[0]["role"] == rejected[0]["role"] == "assistant"
    return chosen[0]["content"], rejected[0]["content"]


# ---------------------------------------------------------------- 1. formats


def test_jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good(1)) + "\n\n" + json.dumps(good(2)) + "\n")  # blank line 2 is ignored
    examples, report = read(path)
    assert sources(examples) == [f"{path}:1", f"{path}:3"]
    assert examples[0].prompt == [user("Question 1?")]
    assert texts(examples[0]) == ("Right 1.", "Wrong 1.")
    assert examples[0].ranking == [0, 1]
    assert (report.source, report.records, report.loaded, report.skipped, report.skipped_at) == (
        str(path), 2, 2, Counter(), []
    )
    assert report.summary() == (f"{path}: 2 of 2 records loaded; 2 prompts found where chosen and rejected "
                                "diverge (no 'prompt' field)")


def test_jsonl_gz(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(good(i)) for i in range(3)) + "\n")
    examples, report = read(path)
    assert sources(examples) == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert texts(examples[2]) == ("Right 2.", "Wrong 2.")
    assert report.loaded == 3


def test_json_array_records_know_their_line(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(
        "[\n"
        '  {"chosen": "Q a? Yes.", "rejected": "Q a? No."},\n'  # line 2
        "  {\n"  # line 3
        '    "chosen": "Q b? Yes.",\n'
        '    "rejected": "Q b? No."\n'
        "  },\n"
        '  {"chosen": "Q c? Yes.",\n'  # line 7
        '   "rejected": "Q c? No."}\n'
        "]\n"
    )
    examples, report = read(path)
    assert sources(examples) == [f"{path}:2", f"{path}:3", f"{path}:7"]
    assert [ex.prompt for ex in examples] == [[user("Q a?")], [user("Q b?")], [user("Q c?")]]
    assert report.records == report.loaded == 3


def test_json_array_bad_record_names_its_line(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good(0), good(1), {"chosen": "only"}, good(3)], indent=2))
    examples, report = read(path, skip_bad=True)
    # indent=2: each record takes 4 lines after the opening "[" on line 1
    assert sources(examples) == [f"{path}:2", f"{path}:6", f"{path}:13"]
    assert report.skipped == Counter({"missing 'rejected'": 1})
    assert report.skipped_at == [f"{path}:10"]
    with pytest.raises(DataError, match=starts(f"{path}:10: missing field 'rejected'")):
        read(path)


def test_json_file_holding_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "data.json", [good(0), good(1), b"{broken", good(3)])
    examples, report = read(path, skip_bad=True)
    assert sources(examples) == [f"{path}:1", f"{path}:2", f"{path}:4"]
    assert report.skipped == Counter({"malformed JSON": 1})
    assert report.skipped_at == [f"{path}:3"]


def test_json_single_object(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(good(7), indent=2))
    examples, _ = read(path)
    assert sources(examples) == [f"{path}:1"]
    assert texts(examples[0]) == ("Right 7.", "Wrong 7.")


@pytest.mark.parametrize("key", ["data", "train", "examples"])
def test_json_object_wrapping_records(tmp_path, key):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"version": 2, key: [good(0), good(1)]}, indent=1))
    examples, report = read(path)
    assert sources(examples) == [f"{path} record 0", f"{path} record 1"]
    assert texts(examples[1]) == ("Right 1.", "Wrong 1.")
    assert report.loaded == 2


def test_json_gz_array(tmp_path):
    path = tmp_path / "data.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps([good(0), good(1)], indent=2))
    examples, _ = read(path)
    assert sources(examples) == [f"{path}:2", f"{path}:6"]


def test_utf8_byte_order_mark_is_ignored(tmp_path):
    bom = b"\xef\xbb\xbf"
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(bom + json.dumps(good(0)).encode() + b"\n")
    array = tmp_path / "bom.json"
    array.write_bytes(bom + json.dumps([good(0)]).encode())
    table = tmp_path / "bom.csv"
    table.write_bytes(bom + b"chosen,rejected\nQuestion 0? Right 0.,Question 0? Wrong 0.\n")
    for path in (jsonl, array, table):
        examples, _ = read(path)
        assert texts(examples[0]) == ("Right 0.", "Wrong 0."), path


def test_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    rows = [
        {  # prompt and chosen are lists of message structs; chosen repeats the prompt
            "prompt": [system("Be brief."), user("2+2?")],
            "chosen": [system("Be brief."), user("2+2?"), assistant("4")],
            "rejected": [assistant("5")],
            "margin": 2.5,
            "subset": "math",
        },
        {
            "prompt": [user("Capital of France?")],
            "chosen": [assistant("Paris")],
            "rejected": [assistant("Lyon")],
            "margin": None,
            "subset": None,
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    examples, report = read(path)
    assert sources(examples) == [f"{path} row 0", f"{path} row 1"]
    first, second = examples
    assert first.prompt == [system("Be brief."), user("2+2?")]
    assert first.completions == [[assistant("4")], [assistant("5")]]
    assert (first.margin, first.subset) == (2.5, "math")
    assert second.prompt == [user("Capital of France?")]
    assert texts(second) == ("Paris", "Lyon")
    assert (second.margin, second.subset) == (None, None)
    assert report.records == report.loaded == 2


def test_parquet_text_columns_and_bad_row(tmp_path):
    path = tmp_path / "data.parquet"
    rows = [good(0), {"chosen": "same", "rejected": "same"}, good(2)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    examples, report = read(path, skip_bad=True)
    assert sources(examples) == [f"{path} row 0", f"{path} row 2"]
    assert report.skipped == Counter({"chosen == rejected": 1})
    assert report.skipped_at == [f"{path} row 1"]
    with pytest.raises(DataError, match=starts(f"{path} row 1: 'chosen' and 'rejected' are identical")):
        read(path)


def test_csv(tmp_path):
    path = write_csv(tmp_path / "data.csv", [
        ["prompt", "chosen", "rejected", "margin"],
        ["Say hi", "Hi!", "Go away.", "1.5"],  # line 2
        ["Write a poem", "Roses are red,\nviolets are blue.", "No.", ""],  # lines 3-4
        [json.dumps([user("2+2?")]), json.dumps([assistant("4")]), "5", "0"],  # line 5
        ["Same", "X", "X", ""],  # line 6: bad
    ])
    examples, report = read(path, skip_bad=True)
    assert sources(examples) == [f"{path}:2", f"{path}:3", f"{path}:5"]
    hi, poem, math = examples
    assert hi.prompt == [user("Say hi")]
    assert texts(hi) == ("Hi!", "Go away.")
    assert hi.margin == 1.5
    assert texts(poem) == ("Roses are red,\nviolets are blue.", "No.")
    assert poem.margin is None
    assert math.prompt == [user("2+2?")]
    assert texts(math) == ("4", "5")
    assert math.margin == 0.0
    assert report.skipped == Counter({"chosen == rejected": 1})
    assert report.skipped_at == [f"{path}:6"]
    with pytest.raises(DataError, match=starts(f"{path}:6: 'chosen' and 'rejected' are identical")):
        read(path)


def test_csv_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("chosen,rejected\nQ? A,Q? B\n\n\nQ? C,Q? C\n\n")
    examples, report = read(path, skip_bad=True)
    assert sources(examples) == [f"{path}:2"]
    assert report.skipped_at == [f"{path}:5"]


def test_csv_scores_blank_cells(tmp_path):
    path = write_csv(tmp_path / "data.csv", [
        ["chosen", "rejected", "score_chosen", "score_rejected", "subset"],
        ["Q? A", "Q? B", "9", "2", "chat"],
        ["Q? C", "Q? D", "", "", "chat"],
    ])
    examples, _ = read(path)
    assert [ex.scores for ex in examples] == [[9.0, 2.0], None]
    assert [ex.subset for ex in examples] == ["chat", "chat"]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (b"Q? C,Q? C", "chosen == rejected"),
        (b"Q? C,", "empty 'rejected'"),
        (b"Q? C,Q? D,extra", "malformed CSV"),
        (b"Q? \xff\xfe,Q? D", "non-UTF-8"),
    ],
    ids=["identical", "empty-rejected", "extra-field", "non-utf8"],
)
def test_csv_bad_row(tmp_path, row, reason):
    path = tmp_path / "data.csv"
    # the quoted cell spans lines 2-3, so the bad row is on line 4
    path.write_bytes(b'chosen,rejected\n"Q? A\nmore",Q? B\n' + row + b"\nQ? E,Q? F\n")
    with pytest.raises(DataError, match=starts(f"{path}:4: ")) as info:
        read(path)
    assert "--skip-bad-records" in str(info.value)
    examples, report = read(path, skip_bad=True)
    assert sources(examples) == [f"{path}:2", f"{path}:5"]
    assert (report.records, report.loaded) == (3, 2)
    assert report.skipped == Counter({reason: 1})
    assert report.skipped_at == [f"{path}:4"]


# ---------------------------------------------------------------- 2. record shapes


def test_hh_multi_turn(tmp_path):
    ex = read_one(tmp_path, {
        "chosen": hh("Hi there", "Hello! How can I help?", "What is 2+2?", "It is 4."),
        "rejected": hh("Hi there", "Hello! How can I help?", "What is 2+2?", "Probably 5."),
    })
    assert ex.prompt == [user("Hi there"), assistant("Hello! How can I help?"), user("What is 2+2?")]
    assert ex.completions == [[assistant("It is 4.")], [assistant("Probably 5.")]]


def test_hh_shared_first_word_stays_in_both_completions(tmp_path):
    ex = read_one(tmp_path, {
        "chosen": hh("Can you help me bake bread?", "Sure, start with flour and water."),
        "rejected": hh("Can you help me bake bread?", "Sure thing, buy some."),
    })
    assert ex.prompt == [user("Can you help me bake bread?")]
    assert texts(ex) == ("Sure, start with flour and water.", "Sure thing, buy some.")


def test_hh_diverging_before_the_last_turn(tmp_path):
    ex = read_one(tmp_path, {
        "chosen": hh("Hi", "Hello!", "Tell a joke", "Why did the chicken..."),
        "rejected": hh("Hi", "Go away.", "Tell a joke", "No."),
    })
    assert ex.prompt == [user("Hi")]
    assert ex.completions == [
        [assistant("Hello!"), user("Tell a joke"), assistant("Why did the chicken...")],
        [assistant("Go away."), user("Tell a joke"), assistant("No.")],
    ]


@pytest.mark.parametrize(
    ("chosen", "rejected", "prompt", "completions"),
    [
        ("What is the capital of France? Paris is.", "What is the capital of France? Parrots.",
         "What is the capital of France?", ("Paris is.", "Parrots.")),
        ("Name a colour: blue", "Name a colour: black", "Name a colour:", ("blue", "black")),
        ("Answer: yes", "Answer: yes, definitely", "Answer:", ("yes", "yes, definitely")),
        ("Red", "Blue", None, ("Red", "Blue")),
    ],
    ids=["split-inside-word", "shared-first-letters", "one-is-prefix", "no-prefix"],
)
def test_plain_text_shared_prefix(tmp_path, chosen, rejected, prompt, completions):
    ex = read_one(tmp_path, {"chosen": chosen, "rejected": rejected})
    assert ex.prompt == ([user(prompt)] if prompt else [])
    assert texts(ex) == completions


def test_chat_messages_without_prompt(tmp_path):
    ex = read_one(tmp_path, {
        "chosen": [system("Be kind."), user("Hi"), assistant("Hello!")],
        "rejected": [system("Be kind."), user("Hi"), assistant("What?")],
    })
    assert ex.prompt == [system("Be kind."), user("Hi")]
    assert ex.completions == [[assistant("Hello!")], [assistant("What?")]]


def test_chat_messages_diverging_user_turn_goes_to_both_completions(tmp_path):
    ex = read_one(tmp_path, {
        "chosen": [user("Hi"), assistant("Hello!"), user("Joke?"), assistant("Knock knock.")],
        "rejected": [user("Hi"), assistant("Hello!"), user("Poem?"), assistant("Roses.")],
    })
    assert ex.prompt == [user("Hi")]
    assert ex.completions == [
        [assistant("Hello!"), user("Joke?"), assistant("Knock knock.")],
        [assistant("Hello!"), user("Poem?"), assistant("Roses.")],
    ]


def test_explicit_prompt_as_text(tmp_path):
    ex = read_one(tmp_path, {"prompt": "Name a fruit.", "chosen": "Apple", "rejected": "Apple pie is no fruit"})
    assert ex.prompt == [user("Name a fruit.")]
    assert texts(ex) == ("Apple", "Apple pie is no fruit")


def test_explicit_prompt_as_hh_text_drops_generation_cue(tmp_path):
    prompt = hh("Hi", "Hello!", "Joke?") + "\n\nAssistant:"
    ex = read_one(tmp_path, {"prompt": prompt, "chosen": " Knock knock.", "rejected": " No."})
    assert ex.prompt == [user("Hi"), assistant("Hello!"), user("Joke?")]
    assert texts(ex) == (" Knock knock.", " No.")


def test_explicit_prompt_as_messages(tmp_path):
    ex = read_one(tmp_path, {
        "prompt": [system("Be brief."), user("2+2?")],
        "chosen": [assistant("4")],
        "rejected": [assistant("5")],
    })
    assert ex.prompt == [system("Be brief."), user("2+2?")]
    assert ex.completions == [[assistant("4")], [assistant("5")]]


def test_chosen_repeating_the_prompt_is_stripped(tmp_path):
    prompt = [user("Hi"), assistant("Hello!"), user("2+2?")]
    ex = read_one(tmp_path, {
        "prompt": prompt,
        "chosen": [*prompt, assistant("4")],
        "rejected": [*prompt, assistant("5"), user("Sure?"), assistant("Yes.")],
    })
    assert ex.prompt == prompt
    assert ex.completions == [[assistant("4")], [assistant("5"), user("Sure?"), assistant("Yes.")]]


def test_extra_message_fields_are_dropped(tmp_path):
    ex = read_one(tmp_path, {"chosen": [user("Hi"), {"role": "assistant", "content": "Yo", "name": "bot"}],
                             "rejected": [user("Hi"), assistant("No")]})
    assert ex.completions == [[assistant("Yo")], [assistant("No")]]


@pytest.mark.parametrize(
    ("extra", "margin", "subset", "scores"),
    [
        ({}, None, None, None),
        ({"margin": 1.5}, 1.5, None, None),
        ({"margin": "2"}, 2.0, None, None),
        ({"margin": 0}, 0.0, None, None),
        ({"subset": "math"}, None, "math", None),
        ({"subset": 3}, None, None, None),
        ({"score_chosen": 8, "score_rejected": 3.5}, None, None, [8.0, 3.5]),
        ({"metadata": {"score_chosen": 7, "score_rejected": "2"}}, None, None, [7.0, 2.0]),
        ({"score_chosen": 9, "metadata": {"score_chosen": 1, "score_rejected": 4}}, None, None, [9.0, 4.0]),
        ({"score_chosen": 8}, None, None, None),
        ({"margin": 0.5, "subset": "code", "score_chosen": 6, "score_rejected": 1}, 0.5, "code", [6.0, 1.0]),
    ],
    ids=["none", "margin", "margin-string", "margin-zero", "subset", "subset-not-string", "scores",
         "scores-in-metadata", "scores-mixed", "one-score-only", "all"],
)
def test_optional_fields(tmp_path, extra, margin, subset, scores):
    ex = read_one(tmp_path, {**good(0), **extra})
    assert (ex.margin, ex.subset, ex.scores) == (margin, subset, scores)
    assert texts(ex) == ("Right 0.", "Wrong 0.")


# ---------------------------------------------------------------- 3. bad records: raise, or skip and count


BAD_RECORDS = {
    "malformed-json": (b'{"chosen": "Q? A", "rejected": ', "malformed JSON"),
    "missing-rejected": ({"chosen": "Q? A"}, "missing 'rejected'"),
    "missing-chosen": ({"rejected": "Q? B"}, "missing 'chosen'"),
    "null-chosen": ({"chosen": None, "rejected": "Q? B"}, "missing 'chosen'"),
    "empty-chosen": ({"chosen": "", "rejected": "Q? B"}, "empty 'chosen'"),
    "whitespace-rejected": ({"chosen": "Q? A", "rejected": "  \n\t "}, "empty 'rejected'"),
    "hh-empty-rejected": ({"chosen": hh("Q?", "A"), "rejected": hh("Q?", "")}, "empty 'rejected'"),
    "empty-prompt": ({"prompt": " ", "chosen": "A", "rejected": "B"}, "empty 'prompt'"),
    "identical-text": ({"chosen": "Q? A", "rejected": "Q? A"}, "chosen == rejected"),
    "identical-word": ({"chosen": "same", "rejected": "same"}, "chosen == rejected"),
    "identical-hh": ({"chosen": hh("Q?", "A"), "rejected": hh("Q?", "A")}, "chosen == rejected"),
    "identical-messages": ({"prompt": "Q?", "chosen": [assistant("A")], "rejected": [assistant("A")]},
                           "chosen == rejected"),
    "non-utf8": (b'{"chosen": "Q? \xff\xfe", "rejected": "Q? B"}', "non-UTF-8"),
    "list-not-object": ([{"chosen": "Q? A", "rejected": "Q? B"}], "not an object"),
    "string-not-object": ("Q? A", "not an object"),
    "margin-not-number": ({**good(9), "margin": "large"}, "bad 'margin'"),
    "margin-is-list": ({**good(9), "margin": [1]}, "bad 'margin'"),
    "score-not-number": ({**good(9), "score_chosen": "high", "score_rejected": 1}, "bad 'score_chosen'"),
    "bad-role": ({"chosen": [user("Q?"), {"role": "robot", "content": "A"}],
                  "rejected": [user("Q?"), assistant("B")]}, "bad 'chosen' messages"),
    "missing-content": ({"prompt": "Q?", "chosen": [assistant("A")], "rejected": [{"role": "assistant"}]},
                        "bad 'rejected' messages"),
    "content-not-string": ({"prompt": [user(5)], "chosen": "A", "rejected": "B"}, "bad 'prompt' messages"),
    "chosen-is-number": ({"chosen": 3, "rejected": "Q? B"}, "bad 'chosen'"),
}


@pytest.fixture(params=list(BAD_RECORDS), ids=list(BAD_RECORDS))
def bad_file(request, tmp_path) -> tuple[Path, str]:
    """A JSON-lines file whose line 3 (of 4) is bad; and the skip reason expected for it."""
    record, reason = BAD_RECORDS[request.param]
    return write_jsonl(tmp_path / "data.jsonl", [good(1), good(2), record, good(4)]), reason


def test_bad_record_raises_naming_file_and_line(bad_file):
    path, _ = bad_file
    with pytest.raises(DataError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert "--skip-bad-records" in message


def test_bad_record_is_skipped_and_counted(bad_file):
    path, reason = bad_file
    examples, report = read(path, skip_bad=True)
    assert sources(examples) == [f"{path}:1", f"{path}:2", f"{path}:4"]
    assert (report.records, report.loaded) == (4, 3)
    assert report.records == report.loaded + sum(report.skipped.values())
    assert report.skipped == Counter({reason: 1})
    assert report.skipped_at == [f"{path}:3"]
    assert report.to_dict()["skipped"] == {reason: 1}
    assert f"SKIPPED 1 (1 {reason}; e.g. {path}:3)" in report.summary()


def test_many_bad_records_counted_by_reason(tmp_path):
    records = [good(0), {"chosen": "x"}, b"{", {"chosen": "x"}, good(4), {"chosen": "y", "rejected": "y"}]
    path = write_jsonl(tmp_path / "data.jsonl", records)
    examples, report = read(path, skip_bad=True)
    assert sources(examples) == [f"{path}:1", f"{path}:5"]
    assert report.skipped == Counter({"missing 'rejected'": 2, "malformed JSON": 1, "chosen == rejected": 1})
    assert report.skipped_at == [f"{path}:{n}" for n in (2, 3, 4, 6)]
    assert (report.records, report.loaded) == (6, 2)


def test_skipped_at_lists_at_most_20_locations(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [good(0)] + [{"chosen": "x"}] * 25)
    _, report = read(path, skip_bad=True)
    assert report.skipped == Counter({"missing 'rejected'": 25})
    assert report.skipped_at == [f"{path}:{n}" for n in range(2, 22)]


# ---------------------------------------------------------------- 3. bad files


def test_file_not_found(tmp_path):
    path = tmp_path / "missing.jsonl"
    with pytest.raises(DataError, match=starts(f"data file not found: {path}")):
        read(path, skip_bad=True)


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(json.dumps(good(0)) + "\n")
    with pytest.raises(DataError, match=starts(f"{path}: unknown file type; use .jsonl")):
        read(path)


def test_directory(tmp_path):
    with pytest.raises(DataError, match=starts(f"{tmp_path} is a folder")):
        read(tmp_path)


@pytest.mark.parametrize("skip_bad", [False, True])
def test_every_record_bad(tmp_path, skip_bad):
    path = write_jsonl(tmp_path / "data.jsonl", [{"chosen": "x"}, {"chosen": "y"}])
    match = starts(f"{path}: no usable preference records" if skip_bad else f"{path}:1: ")
    with pytest.raises(DataError, match=match) as info:
        read(path, skip_bad=skip_bad)
    if skip_bad:
        assert "0 of 2 records loaded; SKIPPED 2 (2 missing 'rejected'" in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match=starts(f"{path}: no usable preference records")) as info:
        read(path, skip_bad=True)
    assert "0 of 0 records loaded" in str(info.value)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataError, match=starts(f"{path}: not a readable parquet file")):
        read(path, skip_bad=True)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00 definitely not gzip data")
    with pytest.raises(DataError, match=starts(f"{path}: not a readable gzip file")):
        read(path, skip_bad=True)


def test_non_utf8_json_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b'[\n  {"chosen": "Q? A", "rejected": "Q? B"},\n'
                     b'  {"chosen": "Q? \xff", "rejected": "Q? B"}\n]\n')  # the bad byte is on line 3
    with pytest.raises(DataError, match=starts(f"{path}:3: file is not valid UTF-8")):
        read(path, skip_bad=True)


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ('[\n  {"chosen": "Q? A", "rejected": "Q? B"},\n  {"chosen": "Q? A" "rejected": "Q? B"}\n]',
         3, "malformed JSON"),
        ('[\n  {"chosen": "Q? A", "rejected": "Q? B"}\n', 3, "JSON array is not closed"),
        ('"just a string"', 1, "expected a JSON array of records or JSON lines"),
    ],
    ids=["malformed", "unclosed", "not-array"],
)
def test_broken_json_file(tmp_path, content, line, message):
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(DataError, match=starts(f"{path}:{line}: {message}")):
        read(path, skip_bad=True)


# ---------------------------------------------------------------- 4. slicing


@pytest.mark.parametrize(
    ("window", "lines"),
    [("[:2]", [1, 2]), ("[-2:]", [4, 5]), ("[1:3]", [2, 3]), ("[3:]", [4, 5]), ("[:-4]", [1])],
)
def test_slice(tmp_path, window, lines):
    path = write_jsonl(tmp_path / "data.jsonl", [good(i) for i in range(1, 6)])
    spec = f"{path}{window}"
    examples, report = read_preferences(spec)
    assert sources(examples) == [f"{path}:{n}" for n in lines]
    assert [texts(ex)[0] for ex in examples] == [f"Right {n}." for n in lines]
    assert (report.source, report.records, report.loaded) == (spec, len(lines), len(lines))


def test_slice_leaves_out_bad_records_outside_it(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [good(1), good(2), {"chosen": "x"}, good(4)])
    examples, report = read_preferences(f"{path}[:2]")
    assert sources(examples) == [f"{path}:1", f"{path}:2"]
    assert report.skipped == Counter()
    with pytest.raises(DataError, match=starts(f"{path}:3: ")):
        read_preferences(f"{path}[-2:]")


def test_slice_of_missing_file(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        read_preferences(f"{tmp_path / 'missing.jsonl'}[:2]")


# ---------------------------------------------------------------- 5. hub ids


def test_unloadable_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError) as info:
        read_preferences("no-such-user/no-such-preference-dataset", split="test")
    message = str(info.value)
    assert message.startswith("'no-such-user/no-such-preference-dataset' is not a local file")
    assert "(split 'test') failed" in message
    assert "Pass a local .jsonl/.jsonl.gz/.json/.parquet/.csv path" in message


# ---------------------------------------------------------------- 6. the real HH-RLHF data


def test_real_hh_helpful_base():
    if not HH_HELPFUL.exists():
        pytest.skip(f"{HH_HELPFUL} is not available")
    examples, report = read(HH_HELPFUL, skip_bad=True)
    assert (report.records, report.loaded, len(examples)) == (2354, 2348, 2348)
    assert report.skipped == Counter({"empty 'rejected'": 4, "chosen == rejected": 2})
    assert report.skipped_at[0] == f"{HH_HELPFUL}:121"
    assert len(report.skipped_at) == 6
    first = examples[0]
    assert first.source == f"{HH_HELPFUL}:1"
    assert first.prompt[0]["role"] == "user" and first.prompt[-1]["role"] == "user"
    assert all(ex.chosen[-1]["role"] == ex.rejected[-1]["role"] == "assistant" for ex in examples)
    with pytest.raises(DataError, match=starts(f"{HH_HELPFUL}:121: field 'rejected' is empty")):
        read(HH_HELPFUL)


def test_saved_hugging_face_dataset_folder(tmp_path):
    """The `datasets` code path for real: a DatasetDict saved to disk, read by split, bad rows located."""
    import datasets

    rows = [{"prompt": "Q?", "chosen": "good answer", "rejected": "bad answer"},
            {"prompt": "Q2?", "chosen": "same", "rejected": "same"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]),
                          "test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    examples, report = read_preferences(str(tmp_path / "ds"), split="train")
    assert len(examples) == 1 and examples[0].chosen == [{"role": "assistant", "content": "good answer"}]
    with pytest.raises(DataError, match=r"ds\[test\] row 1: 'chosen' and 'rejected' are identical"):
        read_preferences(str(tmp_path / "ds"), split="test")
    examples, report = read_preferences(str(tmp_path / "ds"), split="test", skip_bad=True)
    assert report.loaded == 1 and report.skipped == {"chosen == rejected": 1}
    with pytest.raises(DataError, match="no split 'validation'"):
        read_preferences(str(tmp_path / "ds"), split="validation")


@pytest.mark.parametrize("record", [
    {"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hello"},                      # no Assistant turn at all
    {"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hello"},    # one side has none
    {"prompt": "hi", "chosen": [{"role": "user", "content": "again?"}], "rejected": "fine"},
    {"prompt": "q", "completions": ["a", [{"role": "user", "content": "b"}]], "ranks": [0, 1]},
])
def test_a_completion_that_is_not_an_assistant_reply_is_a_bad_record(tmp_path, record):
    """Issue 14.13: such records loaded as a 'pair' of user turns; now an error naming file:line, or a counted skip."""
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"})
                    + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: .*not an assistant reply"):
        read_preferences(str(path))
    examples, report = read_preferences(str(path), skip_bad=True)
    assert len(examples) == 1 and report.skipped == {"completion is not an assistant reply": 1}


def test_a_turn_marker_inside_plain_completion_text_stays_text(tmp_path):
    """Model outputs sometimes hallucinate a turn: with an explicit prompt that is still the assistant's text."""
    text = "Sure.\n\nAssistant: more text"
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": text, "rejected": "no"}) + "\n")
    (ex,), _ = read_preferences(str(path))
    assert ex.completions[0] == [{"role": "assistant", "content": text}]
