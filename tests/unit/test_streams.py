"""Streams without a server: shard lineage, the changes a batch of records names, and what a stream can feed."""

from __future__ import annotations

from datetime import datetime, timezone

from ddbnb.worker.streams import Stream, changes, created_at, lineage_order, stream_of, stream_problems


def shard(name: str, parent: str = "", closed: bool = False) -> dict[str, object]:
    numbers = {"StartingSequenceNumber": "1", **({"EndingSequenceNumber": "9"} if closed else {})}
    return {"ShardId": name, **({"ParentShardId": parent} if parent else {}), "SequenceNumberRange": numbers}


def test_every_parent_comes_before_its_children_whatever_the_listing_order():
    listed = [shard("c1", "b"), shard("b", "a", closed=True), shard("c2", "b"), shard("a", closed=True)]
    listed.append(shard("x", "gone"))
    order = [s["ShardId"] for s in lineage_order(listed)]
    assert sorted(order) == ["a", "b", "c1", "c2", "x"]  # each once; a parent no longer listed is no obstacle
    assert order.index("a") < order.index("b") < order.index("c1") and order.index("b") < order.index("c2")


def test_changes_name_each_item_once_with_every_image_in_order():
    def record(pk: str, old: str | None, new: str | None) -> dict[str, object]:
        body: dict[str, object] = {"Keys": {"pk": {"S": pk}}, "SequenceNumber": "1"}
        body.update({"OldImage": {"pk": {"S": pk}, "v": {"S": old}}} if old else {})
        body.update({"NewImage": {"pk": {"S": pk}, "v": {"S": new}}} if new else {})
        return {"dynamodb": body}

    found = changes([record("a", None, "1"), record("b", "x", None), record("a", "1", "2")], ["pk"])
    assert [c.key for c in found] == [{"pk": {"S": "a"}}, {"pk": {"S": "b"}}]
    assert [image["v"]["S"] for image in found[0].images] == ["1", "1", "2"]
    assert [image["v"]["S"] for image in found[1].images] == ["x"]


def test_what_a_table_description_says_of_its_stream():
    off = stream_of({"TableName": "t", "StreamSpecification": {"StreamEnabled": False}})
    on = stream_of(
        {
            "TableName": "t",
            "LatestStreamArn": "arn:aws:dynamodb:eu-west-1:1:table/t/stream/x",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
        }
    )
    assert off == Stream("t") and on.view_type == "KEYS_ONLY" and not on.carries_old_images
    assert "StreamEnabled" in stream_problems("t", off, copy=False)[1]  # type: ignore[index]
    assert stream_problems("t", on, copy=False) is None  # in place, keys are enough: every item is read again
    assert "NEW_AND_OLD_IMAGES" in stream_problems("t", on, copy=True)[1]  # type: ignore[index]
    moment = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    assert created_at({"dynamodb": {"ApproximateCreationDateTime": moment}}) == moment.timestamp()
