"""Labelled windows from real prediction and label logs (written with kingmaker.logs into tmp folders)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from k8s.decide import Outcome, Reason, State, decide, mature
from k8s.observe import Sources, observe
from k8s.sources.logs import LogWindows
from k8s.state import Pair, Traffic
from kingmaker.roles import Mode

from ..conftest import T0, Fixed, Home, spec, traffic_frame

PAIR = Pair("1", "2")


def windows(home: Home) -> LogWindows:
    return LogWindows(home.predictions, home.labels)


def test_shadow_pairs_the_same_requests_on_both_arms(home: Home) -> None:
    preds, labels = traffic_frame(300, champion="1", challenger="2")
    # the log is written in two shuffled batches: order on disk must not matter
    shuffled = preds.sample(frac=1.0, random_state=3)
    home.write(shuffled.iloc[:250], labels)
    home.write(shuffled.iloc[250:])
    a, b = windows(home).rows(PAIR, Mode.SHADOW, None)
    assert (a.version, b.version) == ("1", "2")
    assert len(a) == len(b) == 300
    assert list(a.request_id) == list(b.request_id) == [f"s1-r{i}" for i in range(300)]
    np.testing.assert_array_equal(a.ts, b.ts)
    np.testing.assert_array_equal(a.label, b.label)
    by_id = preds.set_index(["arm", "request_id"])["score"]
    assert b.score[7] == pytest.approx(by_id[("challenger", "s1-r7")])
    assert a.score[7] == pytest.approx(by_id[("champion", "s1-r7")])
    assert a.ts[0] == pytest.approx(T0) and a.label_ts[0] == pytest.approx(T0 + 60.0)
    assert a.amount is None


def test_shadow_drops_requests_one_arm_did_not_score_and_duplicates(home: Home) -> None:
    preds, labels = traffic_frame(100, champion="1", challenger="2")
    lost = preds[(preds["arm"] == "challenger") & preds["request_id"].isin(["s1-r5", "s1-r6"])].index
    home.write(preds.drop(lost), labels)
    home.write(preds[preds["request_id"] == "s1-r9"])  # logged twice (a retried flush): counts once
    a, b = windows(home).rows(PAIR, Mode.SHADOW, None)
    assert len(a) == len(b) == 98
    assert "s1-r5" not in set(a.request_id) and list(a.request_id).count("s1-r9") == 1


def test_only_the_pairs_versions_on_their_arms_and_the_current_mode_count(home: Home) -> None:
    preds, labels = traffic_frame(100, champion="1", challenger="2")
    other, _ = traffic_frame(50, champion="1", challenger="3", seed=2)  # an earlier challenger
    split, _ = traffic_frame(40, champion="1", challenger="2", mode=Mode.SPLIT, seed=4)
    home.write(pd.concat([preds, other, split]), labels)
    a, b = windows(home).rows(PAIR, Mode.SHADOW, None)
    assert len(a) == len(b) == 100
    assert {rid.split("-")[0] for rid in a.request_id} == {"s1"}


def test_labels_are_joined_by_request_id_and_missing_ones_are_nan(home: Home) -> None:
    preds, labels = traffic_frame(200, champion="1", challenger="2")
    late = labels.iloc[:50].assign(label_ts=pd.Timestamp(T0 + 10_000, unit="s", tz="UTC"))
    home.write(preds, labels.iloc[50:150])  # 50 never labelled
    home.write(preds.iloc[:0], late)  # 50 labelled late
    a, _ = windows(home).rows(PAIR, Mode.SHADOW, None)
    assert int(np.isnan(a.label).sum()) == 50
    assert np.nanmax(a.label_ts) == pytest.approx(T0 + 10_000)
    expected = labels.set_index("request_id")["label"]
    known = ~np.isnan(a.label)
    assert list(a.label[known].astype(int)) == [int(expected[r]) for r in a.request_id[known]]


def test_matured_vs_immature_labels(home: Home) -> None:
    """Only rows older than the label delay with a label by then count (decide's `mature`)."""
    preds, labels = traffic_frame(400, champion="1", challenger="2")
    late = labels.iloc[:100].assign(label_ts=labels["label_ts"].iloc[:100] + pd.Timedelta(hours=2))
    home.write(preds, pd.concat([late, labels.iloc[100:]]))
    a, _ = windows(home).rows(PAIR, Mode.SHADOW, None)
    delay = 3600.0
    now = T0 + 200 + delay  # rows 0..200 are old enough
    m = mature(a, now=now, label_delay_seconds=delay)
    assert m.immature == 199  # rows 201..399 (row 200 is exactly at the delay: due)
    assert m.unlabelled == 100  # rows 0..99: their label came after the delay
    assert m.labelled == 101


def test_split_mode_keeps_each_arm_from_the_challengers_first_row(home: Home) -> None:
    before, _ = traffic_frame(100, champion="1", challenger="2", mode=Mode.SPLIT, weight=0.0, seed=5,
                              t0=T0 - 1000)  # champion alone, before the experiment
    preds, labels = traffic_frame(1000, champion="1", challenger="2", mode=Mode.SPLIT, weight=0.3)
    home.write(pd.concat([before, preds]), labels)
    a, b = windows(home).rows(PAIR, Mode.SPLIT, "amount")
    n_b = int((preds["arm"] == "challenger").sum())
    assert len(b) == n_b and len(a) == 1000 - n_b
    assert a.ts.min() >= b.ts.min()
    assert a.amount is not None and b.amount is not None
    np.testing.assert_allclose(np.sort(b.amount), np.sort(preds[preds["arm"] == "challenger"]["feat_amount"]))


def test_missing_amount_column_falls_back_to_none(home: Home) -> None:
    preds, labels = traffic_frame(50, champion="1", challenger="2")
    home.write(preds, labels)
    a, _ = windows(home).rows(PAIR, Mode.SHADOW, "no_such_feature")
    assert a.amount is None


def test_empty_or_absent_logs_give_empty_rows(home: Home) -> None:
    a, b = windows(home).rows(PAIR, Mode.SHADOW, None)
    assert len(a) == len(b) == 0
    preds, _ = traffic_frame(20, champion="1", challenger="3")  # only another challenger's rows
    home.write(preds)
    a, b = windows(home).rows(PAIR, Mode.SHADOW, None)
    assert len(a) == len(b) == 0


def test_observed_logs_drive_decide_to_each_outcome(home: Home) -> None:
    """End to end through the pure core: a better challenger is promoted, a worse one rolled back."""
    s = spec()
    better, labels = traffic_frame(2500, champion="1", challenger="2", separations=(1.0, 3.5))
    worse, labels_w = traffic_frame(2500, champion="1", challenger="3", separations=(3.5, 1.0), seed=9)
    home.write(pd.concat([better, worse]), pd.concat([labels, labels_w]))
    src = Sources(windows(home), Fixed(), Fixed())
    now = T0 + 2500 + 3600 + 60
    up = decide(observe(src, s, Pair("1", "2"), now), s.policy, State())
    down = decide(observe(src, s, Pair("1", "3"), now), s.policy, State())
    assert (up.outcome, up.reason) == (Outcome.PROMOTE, Reason.CHALLENGER_BETTER)
    assert (down.outcome, down.reason) == (Outcome.ROLLBACK, Reason.CHALLENGER_WORSE)
    # before the labels mature there is nothing to decide on
    early = decide(observe(src, s, Pair("1", "2"), T0 + 2500), s.policy, State())
    assert (early.outcome, early.reason) == (Outcome.HOLD, Reason.INSUFFICIENT_SAMPLES)


def test_split_mode_with_pairing_keeps_both_arms_rows_of_a_paired_request(home: Home) -> None:
    preds, labels = traffic_frame(400, champion="1", challenger="2", mode=Mode.SPLIT, weight=0.1, pairing=1.0)
    home.write(preds, labels)
    a, b = windows(home).rows(PAIR, Mode.SPLIT, None)
    assert len(a) == len(b) == 400  # every request on both arms, once each
    assert a.served is not None and b.served is not None
    served_a, served_b = dict(zip(a.request_id, a.served, strict=True)), dict(zip(b.request_id, b.served, strict=True))
    assert all(served_a[rid] != served_b[rid] for rid in served_a)  # exactly one arm answered each request
    answered = preds[(preds["arm"] == "challenger") & preds["served"]]["request_id"]
    assert {rid for rid, served in served_b.items() if served} == set(answered)


def test_paired_split_logs_drive_decide_on_the_pairs_and_unpaired_split_on_blocks(home: Home) -> None:
    """A 90/10 split of 6,000 requests: with pairing, the test sees ~5,500 paired transactions and promotes
    the much better challenger; without, it sees ~600 challenger rows in blocks and cannot decide yet."""
    s = dataclasses.replace(spec(), traffic=Traffic(0.1, Mode.SPLIT))
    paired, labels = traffic_frame(6000, champion="1", challenger="2", mode=Mode.SPLIT, weight=0.1, pairing=1.0,
                                   separations=(1.0, 3.5))
    plain, labels_p = traffic_frame(6000, champion="1", challenger="3", mode=Mode.SPLIT, weight=0.1,
                                    separations=(1.0, 3.5), seed=9)
    home.write(pd.concat([paired, plain]), pd.concat([labels, labels_p]))
    src = Sources(windows(home), Fixed(), Fixed())
    now = T0 + 6000 + 3600 + 60
    up = decide(observe(src, s, Pair("1", "2"), now), s.policy, State())
    assert (up.outcome, up.reason, up.evidence.comparison) == (Outcome.PROMOTE, Reason.CHALLENGER_BETTER, "paired")
    assert up.evidence.champion.labelled == up.evidence.challenger.labelled == 6000  # the pairs
    assert "paired transactions" in up.message
    held = decide(observe(src, s, Pair("1", "3"), now), s.policy, State())
    assert held.evidence.comparison == "unpaired" and held.outcome is Outcome.HOLD
    assert held.evidence.challenger.labelled == int((plain["arm"] == "challenger").sum())
