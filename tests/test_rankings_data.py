"""Rankings, ties and margins: OA trees, generic rankings, UltraFeedback, PandaLM (real files) and eq. 5 margins."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from rewardkit.data import DataError, PreferenceExample, read_preferences
from rewardkit.data.margins import (
    LLAMA2_LARGE,
    LLAMA2_SMALL,
    apply_margins,
    likert_margin,
    margin_from_scores,
    pair_margins,
    parse_likert,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared/data"
OA = DATA / "oasst-rankings/en_100_tree.jsonl"
UF = DATA / "ultrafeedback-scored"
PANDALM = DATA / "pandalm/testset-v1.json"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def starts(text: str) -> str:
    return "^" + re.escape(text)


def read_one(tmp_path: Path, record: dict, **kwargs) -> PreferenceExample:
    examples, report = read_preferences(str(write_jsonl(tmp_path / "one.jsonl", [record])), **kwargs)
    assert report.records == report.loaded == 1
    return examples[0]


def pair(i: int) -> dict:
    return {"prompt": f"Q{i}?", "chosen": f"right {i}", "rejected": f"wrong {i}"}


def oa_node(mid: str, role: str, text: str, rank: int | None = None, replies: list | None = None) -> dict:
    node = {"message_id": mid, "role": role, "text": text, "replies": replies or []}
    if rank is not None:
        node["rank"] = rank
    return node


# ---------------------------------------------------------------- 1. Open Assistant trees (real file)


def _oa_messages_by_id() -> tuple[dict[str, dict], dict[str, list[dict]], dict[str, int]]:
    """All messages flattened by id, their children by parent id, and the file line of each."""
    by_id, children, line_of = {}, {}, {}
    for lineno, line in enumerate(need(OA).read_text().splitlines(), start=1):
        todo = [json.loads(line)["prompt"]]
        while todo:
            node = todo.pop()
            by_id[node["message_id"]] = node
            line_of[node["message_id"]] = lineno
            children.setdefault(node.get("parent_id"), []).append(node)
            todo.extend(node["replies"])
    return by_id, children, line_of


def test_real_oa_trees_every_node_with_two_ranked_replies_is_a_ranking():
    examples, report = read_preferences(str(need(OA)))
    by_id, children, line_of = _oa_messages_by_id()
    # Independent route: group messages by parent_id instead of walking the nested replies.
    expected = {mid: sorted((c for c in children.get(mid, []) if c.get("rank") is not None), key=lambda c: c["rank"])
                for mid, node in by_id.items() if node["role"] == "prompter"}
    expected = {mid: ranked for mid, ranked in expected.items() if len(ranked) >= 2}
    assert report.records == report.loaded == len(examples) == len(expected) == 212
    assert report.k_counts == Counter(len(r) for r in expected.values())
    assert min(report.k_counts) == 2 and max(report.k_counts) == 9
    unranked = sum(1 for n in by_id.values() if n["role"] == "assistant" and n.get("rank") is None)
    assert report.notes == Counter({"OA assistant replies without rank (in no ranking)": unranked})
    assert unranked == 46
    assert "K: 57×2, 117×3, 27×4, 3×5, 6×6, 1×8, 1×9" in report.summary()

    for ex in examples:
        where, node_id = ex.source.rsplit(" node ", 1)
        assert where == f"{OA}:{line_of[node_id]}"
        # The prompt is the path root → node, rebuilt by following parent_id upwards.
        path, mid = [], node_id
        while mid is not None:
            path.insert(0, {"role": "user" if by_id[mid]["role"] == "prompter" else "assistant",
                            "content": by_id[mid]["text"]})
            mid = by_id[mid].get("parent_id")
        assert ex.prompt == path
        ranked = expected[node_id]
        assert [ex.completions[i] for i in ex.ranking] == [[assistant(c["text"])] for c in ranked]
        assert ex.ties is None and ex.subset == "oasst"


def test_real_oa_node_checked_by_hand():
    examples, _ = read_preferences(str(need(OA)))
    ex = next(e for e in examples if e.source == f"{OA}:2 node daed19ee-f4e8-4c2a-9690-aebc09d2893a")
    assert [m["role"] for m in ex.prompt] == ["user", "assistant", "user"]
    assert ex.prompt[0]["content"].startswith("How to protect my eyes when I have to stare at my ")
    assert ex.prompt[1]["content"].startswith("Your eyes are not designed to stare at one thing")
    assert ex.prompt[2]["content"] == "Are blue light blocking glasses also effective?"
    assert len(ex.completions) == 2 and ex.ranking == [0, 1]
    assert ex.chosen[0]["content"].startswith("There is no scientific research to prove that blue")
    assert ex.rejected[0]["content"].startswith("Blue light blocking glasses have gained popularity")


def test_oa_tree_ranks_order_replies_and_unranked_replies_are_counted(tmp_path):
    tree = {"message_tree_id": "t", "tree_state": "ready_for_export", "prompt": oa_node("root", "prompter", "Hi?", replies=[
        oa_node("a", "assistant", "second", rank=1, replies=[
            oa_node("f", "prompter", "More?", replies=[
                oa_node("g", "assistant", "third", rank=2), oa_node("h", "assistant", "first", rank=0),
                oa_node("i", "assistant", "unranked"), oa_node("j", "assistant", "second", rank=1)])]),
        oa_node("b", "assistant", "first", rank=0),
        oa_node("c", "assistant", "lonely unranked"),
    ])}
    path = write_jsonl(tmp_path / "oa.jsonl", [tree])
    examples, report = read_preferences(str(path))
    assert [e.source for e in examples] == [f"{path}:1 node root", f"{path}:1 node f"]
    top, deep = examples
    assert [top.completions[i][0]["content"] for i in top.ranking] == ["first", "second"]
    assert deep.prompt == [user("Hi?"), assistant("second"), user("More?")]
    assert [deep.completions[i][0]["content"] for i in deep.ranking] == ["first", "second", "third"]
    assert deep.ranks == [2, 0, 1]
    assert report.notes == Counter({"OA assistant replies without rank (in no ranking)": 2})
    assert report.k_counts == Counter({2: 1, 3: 1})


def _bad_oa_tree() -> dict:
    return {"message_tree_id": "t", "prompt": oa_node("root", "prompter", "Hi?", replies=[
        oa_node("a", "assistant", "A", rank=0, replies=[
            oa_node("f", "prompter", "More?", replies=[
                oa_node("g", "assistant", "G", rank=0), oa_node("h", "assistant", "H", rank=0)])]),
        oa_node("b", "assistant", "B", rank=1),
    ])}


def test_oa_duplicate_ranks_raise_naming_line_and_node(tmp_path):
    path = write_jsonl(tmp_path / "oa.jsonl", [_bad_oa_tree()])
    with pytest.raises(DataError, match=starts(f"{path}:1 node f: replies share rank 0")):
        read_preferences(str(path))


def test_oa_bad_nodes_and_trees_are_skipped_and_counted(tmp_path):
    tree = _bad_oa_tree()
    tree["prompt"]["replies"].append({"message_id": "x", "role": "robot", "text": "?", "rank": 2})
    path = write_jsonl(tmp_path / "oa.jsonl", [tree, {"message_tree_id": "u", "prompt": None}, pair(3)])
    examples, report = read_preferences(str(path), skip_bad=True)
    assert [e.source for e in examples] == [f"{path}:3"]
    # root: its ranked reply x has a bad role; node f: duplicate ranks; x itself; line 2: no root message.
    assert report.skipped == Counter({"bad OA tree": 3, "duplicate ranks": 1})
    assert report.skipped_at == [f"{path}:1 node root", f"{path}:1 node f", f"{path}:1 node x", f"{path}:2"]
    assert (report.records, report.loaded) == (5, 1)
    with pytest.raises(DataError, match=starts(f"{path}:1 node root: ranked reply x has role 'robot'")):
        read_preferences(str(path))


def test_oa_valid_rankings_survive_a_bad_node(tmp_path):
    path = write_jsonl(tmp_path / "oa.jsonl", [_bad_oa_tree()])
    examples, report = read_preferences(str(path), skip_bad=True)
    assert [e.source for e in examples] == [f"{path}:1 node root"]
    assert report.skipped == Counter({"duplicate ranks": 1})
    assert (report.records, report.loaded) == (2, 1)


# ---------------------------------------------------------------- 2. generic rankings and ties


def test_ranking_from_ranks(tmp_path):
    ex = read_one(tmp_path, {"prompt": "Q?", "completions": ["b", [assistant("a")], "c"], "ranks": [1, 0, 2]})
    assert ex.prompt == [user("Q?")]
    assert ex.completions == [[assistant("b")], [assistant("a")], [assistant("c")]]
    assert (ex.ranking, ex.ties, ex.scores, ex.ranks) == ([1, 0, 2], None, None, [1, 0, 2])


def test_ranking_from_scores_with_ties(tmp_path):
    ex = read_one(tmp_path, {"prompt": "Q?", "completions": ["a", "b", "c", "d"], "scores": [2, 7.5, 2, 9]})
    assert ex.ranking == [3, 1, 0, 2]
    assert ex.ties == [[0, 2]]
    assert ex.scores == [2.0, 7.5, 2.0, 9.0]
    assert ex.ranks == [2, 1, 2, 0]
    assert [t for _, _, t in ex.preference_pairs()] == [False, False, False, False, False, True]
    assert not ex.is_tie


def test_ranking_all_scores_equal_is_a_tie(tmp_path):
    ex = read_one(tmp_path, {"prompt": "Q?", "completions": ["a", "b"], "scores": [5, 5]})
    assert ex.ties == [[0, 1]] and ex.is_tie


def test_ranking_with_ranks_and_consistent_scores(tmp_path):
    ex = read_one(tmp_path, {"prompt": "Q?", "completions": ["a", "b", "c"], "ranks": [2, 0, 1], "scores": [1, 3, 3]})
    assert (ex.ranking, ex.ties, ex.scores) == ([1, 2, 0], None, [1.0, 3.0, 3.0])


def test_pair_with_explicit_tie(tmp_path):
    ex = read_one(tmp_path, {**pair(0), "tie": True})
    assert ex.ties == [[0, 1]] and ex.is_tie
    assert read_one(tmp_path, {**pair(0), "tie": False}).ties is None


def test_pair_scores_equal_is_a_tie_and_lower_chosen_score_is_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {**pair(1), "score_chosen": 8, "score_rejected": 8},
        {**pair(2), "score_chosen": 3, "score_rejected": 6},
        {**pair(3), "score_chosen": 9, "score_rejected": 6},
    ])
    (tie, low, normal), report = read_preferences(str(path))
    assert (tie.ties, tie.is_tie, tie.ranking) == ([[0, 1]], True, [0, 1])
    assert (low.ties, low.ranking, low.scores) == (None, [0, 1], [3.0, 6.0])
    assert (normal.ties, normal.scores) == (None, [9.0, 6.0])
    assert report.notes == Counter({"pairs with equal scores read as ties": 1,
                                    "pairs with score_chosen < score_rejected (label kept)": 1})
    assert "1 pairs with equal scores read as ties" in report.summary()
    assert report.to_dict()["notes"] == dict(report.notes)


MALFORMED_RANKINGS = {
    "duplicate-ranks": ({"prompt": "Q?", "completions": ["a", "b", "c"], "ranks": [0, 1, 1]}, "duplicate ranks",
                        "'ranks' repeats 1; ranks must be distinct. To express a tie"),
    "one-completion": ({"prompt": "Q?", "completions": ["a"], "ranks": [0]}, "K < 2",
                       "a ranking needs at least 2 completions, got 1."),
    "no-completions": ({"prompt": "Q?", "completions": [], "scores": []}, "K < 2",
                       "a ranking needs at least 2 completions, got 0."),
    "no-ranks-or-scores": ({"prompt": "Q?", "completions": ["a", "b"]}, "missing ranks/scores",
                           "a ranking needs 'ranks' (0 = best, one per completion) or 'scores'"),
    "null-score": ({"prompt": "Q?", "completions": ["a", "b"], "scores": [1, None]}, "missing score",
                   "completion 1 has no score"),
    "ranks-length": ({"prompt": "Q?", "completions": ["a", "b", "c"], "ranks": [0, 1]}, "length mismatch",
                     "'ranks' has 2 values for 3 completions"),
    "scores-length": ({"prompt": "Q?", "completions": ["a", "b"], "scores": [1, 2, 3]}, "length mismatch",
                      "'scores' has 3 values for 2 completions"),
    "score-not-number": ({"prompt": "Q?", "completions": ["a", "b"], "scores": [1, "high"]}, "bad 'scores[1]'",
                         "field 'scores[1]' must be a number"),
    "score-nan": ({"prompt": "Q?", "completions": ["a", "b"], "scores": [1, "nan"]}, "bad 'scores[1]'",
                  "field 'scores[1]' must be a finite number"),
    "rank-not-integer": ({"prompt": "Q?", "completions": ["a", "b"], "ranks": [0, 0.5]}, "bad 'ranks'",
                         "ranks[1] must be an integer"),
    "ranks-scores-disagree": ({"prompt": "Q?", "completions": ["a", "b"], "ranks": [0, 1], "scores": [1, 2]},
                              "ranks and scores disagree", "'ranks' put completion 0 above 1"),
    "identical-completions": ({"prompt": "Q?", "completions": ["a", "b", "a"], "ranks": [0, 1, 2]},
                              "identical completions", "completions 0 and 2 are identical"),
    "no-prompt": ({"completions": ["a", "b"], "ranks": [0, 1]}, "missing 'prompt'", "a ranking needs a 'prompt'"),
    "tie-not-bool": ({**pair(0), "tie": "maybe"}, "bad 'tie'", "field 'tie' must be true or false"),
}


@pytest.fixture(params=list(MALFORMED_RANKINGS), ids=list(MALFORMED_RANKINGS))
def malformed(request, tmp_path) -> tuple[Path, str, str]:
    record, reason, message = MALFORMED_RANKINGS[request.param]
    good = {"prompt": "Q?", "completions": ["x", "y", "z"], "scores": [3, 2, 1]}
    return write_jsonl(tmp_path / "r.jsonl", [good, pair(2), record, good]), reason, message


def test_malformed_ranking_raises_with_file_and_line(malformed):
    path, _, message = malformed
    with pytest.raises(DataError, match=starts(f"{path}:3: {message}")) as info:
        read_preferences(str(path))
    assert "--skip-bad-records" in str(info.value)


def test_malformed_ranking_is_skipped_and_counted(malformed):
    path, reason, _ = malformed
    examples, report = read_preferences(str(path), skip_bad=True)
    assert [e.source for e in examples] == [f"{path}:{n}" for n in (1, 2, 4)]
    assert report.skipped == Counter({reason: 1}) and report.skipped_at == [f"{path}:3"]
    assert (report.records, report.loaded) == (4, 3)
    assert report.k_counts == Counter({3: 2, 2: 1})


# ---------------------------------------------------------------- 3. UltraFeedback-scored (real files)


@pytest.mark.parametrize(("split", "n", "n_bad"), [("train", 1000, 6), ("eval", 200, 1)])
def test_real_ultrafeedback(split, n, n_bad):
    path = need(UF / f"{split}.jsonl")
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(raw) == n
    # The published files hold a few pairs with identical or empty sides; they are skipped, counted.
    bad_lines = {i for i, r in enumerate(raw, start=1)
                 if r["chosen"] == r["rejected"] or not r["chosen"].strip() or not r["rejected"].strip()}
    assert len(bad_lines) == n_bad
    examples, report = read_preferences(str(path), skip_bad=True)
    assert report.records == n and report.loaded == n - n_bad
    assert sum(report.skipped.values()) == n_bad
    assert {e.source for e in examples} == {f"{path}:{i}" for i in range(1, n + 1) if i not in bad_lines}
    kept = {f"{path}:{i}": r for i, r in enumerate(raw, start=1) if i not in bad_lines}
    equal = 0
    for ex in examples:
        meta = kept[ex.source]["metadata"]
        assert ex.scores == [meta["score_chosen"], meta["score_rejected"]]
        assert ex.chosen == [assistant(kept[ex.source]["chosen"])]
        if meta["score_chosen"] == meta["score_rejected"]:
            equal += 1
            assert ex.ties == [[0, 1]] and ex.is_tie
        else:
            assert ex.ties is None and meta["score_chosen"] > meta["score_rejected"]
    assert report.notes == Counter({"pairs with equal scores read as ties": equal})
    assert equal == {"train": 110, "eval": 24}[split]
    with pytest.raises(DataError, match=starts(f"{path}:{min(bad_lines)}: ")):
        read_preferences(str(path))


# ---------------------------------------------------------------- 4. PandaLM (real file)


def test_real_pandalm():
    path = need(PANDALM)
    raw = json.loads(path.read_text())
    examples, report = read_preferences(str(path))
    assert report.records == report.loaded == len(examples) == len(raw) == 999
    # Independent route: a side wins when at least 2 of the 3 annotators voted for it.
    expected_ties = sum(1 for r in raw if max(
        [r["annotator1"], r["annotator2"], r["annotator3"]].count(side) for side in (1, 2)) < 2)
    assert sum(ex.is_tie for ex in examples) == expected_ties == 105
    assert report.notes["PandaLM ties (majority 0 or no majority)"] == expected_ties
    for ex, r in zip(examples, raw):
        votes = [r["annotator1"], r["annotator2"], r["annotator3"]]
        assert ex.scores == [votes.count(1), votes.count(2)]
        assert ex.subset == "pandalm"
        assert ex.completions == [[assistant(str(r["response1"]))], [assistant(str(r["response2"]))]]
        if not ex.is_tie:
            winner = 1 if votes.count(1) >= 2 else 2
            assert ex.ranking == ([0, 1] if winner == 1 else [1, 0])
    first = examples[0]  # idx 0: all three annotators prefer response2
    assert first.ranking == [1, 0] and first.chosen == [assistant("If you have any questions, please let me know.")]
    assert first.prompt[0]["content"].startswith("The sentence you are given might be too wordy")
    assert first.prompt[0]["content"].endswith("\n\nIf you have any questions about my rate or if you find it "
                                               "necessary to increase or decrease the scope for this project, "
                                               "please let me know.")
    blank_instruction = next(ex for ex, r in zip(examples, raw) if r["idx"] == 466)
    assert blank_instruction.prompt == [user("Truthfulness")]
    boolean = next(ex for ex, r in zip(examples, raw) if r["idx"] == 157)
    assert boolean.completions[0] == [assistant("True")]


def test_pandalm_bad_vote(tmp_path):
    row = {"instruction": "Say hi", "input": "", "response1": "hi", "response2": "yo",
           "annotator1": 1, "annotator2": 3, "annotator3": 1}
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{**row, "annotator2": 1}, row], indent=1))
    with pytest.raises(DataError, match=starts(f"{path}:11: field 'annotator2' must be 0 (tie), 1 or 2, got 3.")):
        read_preferences(str(path))
    examples, report = read_preferences(str(path), skip_bad=True)
    assert len(examples) == 1 and report.skipped == Counter({"bad PandaLM record": 1})


# ---------------------------------------------------------------- 5. margins (eq. 5)


def test_llama2_margin_tables():
    assert LLAMA2_LARGE == {"significantly better": 3, "better": 2, "slightly better": 1,
                            "negligibly better": 0, "unsure": 0}
    assert LLAMA2_SMALL == pytest.approx({"significantly better": 1, "better": 2 / 3, "slightly better": 1 / 3,
                                          "negligibly better": 0, "unsure": 0})


def test_margin_from_scores():
    assert margin_from_scores(9, 6) == 3
    assert margin_from_scores(9, 6, scale=0.5) == 1.5
    assert margin_from_scores(7.5, 7.5, scale=2) == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, LLAMA2_LARGE),
        ("llama2-small", LLAMA2_SMALL),
        (" Llama2-Large ", LLAMA2_LARGE),
        ("significantly better=3,better=2,slightly better=1,negligibly better=0",
         {"significantly better": 3, "better": 2, "slightly better": 1, "negligibly better": 0}),
        ("Much_Better = 2/3 , same=0,", {"much better": 2 / 3, "same": 0}),
        ({"Better": 2, "worse-ish": 0.5}, {"better": 2, "worse ish": 0.5}),
    ],
    ids=["default", "preset-small", "preset-case", "string", "fractions-and-spacing", "dict"],
)
def test_parse_likert(spec, expected):
    assert parse_likert(spec) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("better", "'better' has no '='"),
        ("better=lots", "the margin of 'better' must be a number ≥ 0"),
        ("better=-1", "the margin of 'better' must be a number ≥ 0"),
        ("better=1,Better=2", "category 'better' is given twice"),
        ("=1", "category '' must be non-empty"),
        ("", "Likert mapping is empty"),
        ({"better": True}, "the margin of 'better' must be a number"),
        (3, "Likert mapping must be a preset name"),
    ],
)
def test_parse_likert_errors(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_likert(spec)


def test_unknown_likert_category_lists_known_ones():
    assert likert_margin("Significantly  Better", LLAMA2_LARGE) == 3
    with pytest.raises(ValueError, match=re.escape("unknown preference category 'way better'; known: "
                                                   "'significantly better', 'better', 'slightly better'")):
        likert_margin("way better", LLAMA2_LARGE)


def test_reader_maps_likert_margins(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [{**pair(1), "margin": "significantly better"},
                                              {**pair(2), "margin": "Slightly_Better"},
                                              {**pair(3), "margin": 0.25}])
    examples, report = read_preferences(str(path))
    assert [e.margin for e in examples] == [3.0, 1.0, 0.25]
    assert report.notes == Counter({"Likert margins mapped": 2})
    examples, _ = read_preferences(str(path), likert="llama2-small")
    assert [e.margin for e in examples] == pytest.approx([1.0, 1 / 3, 0.25])
    examples, _ = read_preferences(str(path), likert={"significantly better": 10, "slightly better": 5})
    assert [e.margin for e in examples] == [10.0, 5.0, 0.25]


def test_reader_unknown_likert_category_is_a_record_error(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [pair(1), {**pair(2), "margin": "way better"}])
    with pytest.raises(DataError, match=starts(f"{path}:2: field 'margin': unknown preference category 'way better'; "
                                               "known: 'significantly better'")):
        read_preferences(str(path))
    _, report = read_preferences(str(path), skip_bad=True)
    assert report.skipped == Counter({"bad 'margin'": 1})


def test_apply_margins_sources(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {**pair(1), "margin": "better", "score_chosen": 9, "score_rejected": 5},
        {**pair(2), "margin": 0.5, "score_chosen": 7, "score_rejected": 7},  # equal scores: a tie
        {"prompt": "Q?", "completions": ["a", "b", "c"], "scores": [1, 4, 4]},
    ])
    examples, _ = read_preferences(str(path))
    assert [e.margin for e in apply_margins(examples, "none")] == [None, None, None]
    by_scores = apply_margins(examples, "scores", scale=0.5)
    assert [e.margin for e in by_scores] == [2.0, None, 0.0]  # 0.5·(9−5); tie: none; top two tied: 0
    assert [e.margin for e in examples] == [2.0, 0.5, None]  # inputs are not modified
    with pytest.raises(DataError, match=re.escape("margin source 'field' needs a 'margin' field (a number or a "
                                                  f"Likert category), but 1 of 3 records have none (e.g. {path}:3)")):
        apply_margins(examples, "field")
    assert [e.margin for e in apply_margins(examples[:2], "field")] == [2.0, None]


def test_apply_margins_refuses_missing_scores_and_negative_margins(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [pair(1), {**pair(2), "score_chosen": 3, "score_rejected": 6}])
    examples, _ = read_preferences(str(path))
    with pytest.raises(DataError, match=re.escape(f"needs per-completion 'scores', but 1 of 2 records have none "
                                                  f"(e.g. {path}:1)")):
        apply_margins(examples, "scores")
    with pytest.raises(DataError, match=re.escape(f"gives 1 records a negative margin, i.e. the preferred completion "
                                                  f"is rated lower (e.g. {path}:2 (-3))")):
        apply_margins(examples[1:], "scores")
    with pytest.raises(ValueError, match="unknown margin source 'likert'"):
        apply_margins(examples, "likert")
    with pytest.raises(ValueError, match="margin scale must be a finite number > 0"):
        apply_margins(examples, "scores", scale=0)


def test_pair_margins_for_k_wise_rankings():
    ex = PreferenceExample(prompt=[user("Q?")], completions=[[assistant(c)] for c in "abcd"],
                           ranking=[3, 1, 0, 2], ties=[[0, 2]], scores=[2.0, 7.5, 2.0, 9.0])
    pairs = ex.preference_pairs()
    margins = pair_margins(ex, scale=2.0)
    assert len(margins) == len(pairs) == 6
    for (better, worse, tied), m in zip(pairs, margins):
        assert m == (0.0 if tied else 2.0 * (ex.scores[better] - ex.scores[worse]))
    assert margins == [3.0, 14.0, 14.0, 11.0, 11.0, 0.0]
    with pytest.raises(ValueError, match="no scores"):
        pair_margins(PreferenceExample(prompt=[], completions=ex.completions, ranking=[0, 1, 2, 3], source="x"))
