"""Throttling by reason, against the capacity emulation: a hot key range slows only the worker that writes it."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

import ddbnb
from ddbnb.emulation.capacity_proxy import CapacityProxy
from ddbnb.insight.results import result_entries
from ddbnb.worker.writes import KEY_RANGE, key_range_only, throttle_reasons
from tests.conftest import create_table, put_items, spec
from tests.functional.test_capacity_proxy import at, through

HOT_KEY = {"S": "tenant#hot"}


def test_the_emulation_names_its_reasons_and_refuses_only_the_hot_requests_of_a_batch(sandbox, dynamodb):
    table = create_table(dynamodb)
    proxy = CapacityProxy(sandbox.dynamodb.url, read_units=0, write_units=50, key_range_write_units=2).start()
    try:
        client = through(proxy)
        hot = [{"pk": HOT_KEY, "sk": {"S": f"o{i}"}} for i in range(3)]
        client.put_item(TableName=table, Item=hot[0])  # a new key range holds one second's worth: 2 units
        client.put_item(TableName=table, Item=hot[1])
        with pytest.raises(ClientError) as refused:
            client.put_item(TableName=table, Item=hot[2])
        assert throttle_reasons(refused.value) == ("TableWriteKeyRangeThroughputExceeded",)
        assert key_range_only(throttle_reasons(refused.value))
        resource = refused.value.response["ThrottlingReasons"][0]["resource"]
        assert resource.endswith(f":table/{table}")

        # A batch with the hot key and two cold ones: only the hot request comes back unprocessed.
        cold = [{"pk": {"S": f"user#{i}"}, "sk": {"S": "p"}} for i in range(2)]
        batch = [{"PutRequest": {"Item": item}} for item in (hot[2], *cold)]
        answer = client.batch_write_item(RequestItems={table: batch})
        assert answer["UnprocessedItems"] == {table: [batch[0]]}
        # PartiQL: the hot statement answers an error in its place, the others are applied.
        statements = [
            {"Statement": f"INSERT INTO \"{table}\" VALUE {{'pk': ?, 'sk': ?}}", "Parameters": [i["pk"], i["sk"]]}
            for i in (cold[0] | {"sk": {"S": "q"}}, hot[2], cold[1] | {"sk": {"S": "q"}})
        ]
        responses = client.batch_execute_statement(Statements=statements)["Responses"]
        assert [r.get("Error", {}).get("Code") for r in responses] == [None, "ProvisionedThroughputExceeded", None]
        assert dynamodb.scan(TableName=table, Select="COUNT")["Count"] == 2 + 2 + 2

        # The table's own limit (50 units a second, 1 second saved): the whole call, with the table's reason.
        with pytest.raises(ClientError) as table_wide:
            for i in range(200):
                client.put_item(TableName=table, Item={"pk": {"S": f"more#{i}"}, "sk": {"S": "p"}})
        assert throttle_reasons(table_wide.value) == ("TableWriteProvisionedThroughputExceeded",)
        assert not key_range_only(throttle_reasons(table_wide.value))
    finally:
        proxy.stop()


def test_a_hot_key_range_slows_its_own_segment_and_the_rest_keeps_its_share(sandbox, dynamodb, tmp_path, monkeypatch):
    share = 400
    table = create_table(dynamodb, throughput=share)
    hot = [{"pk": HOT_KEY, "sk": {"S": f"order#{i:05d}"}, "pad": {"S": "x" * 300}} for i in range(400)]
    cold = [{"pk": {"S": f"user#{i:05d}"}, "sk": {"S": "profile"}, "pad": {"S": "x" * 300}} for i in range(2_400)]
    put_items(dynamodb, table, hot + cold)
    proxy = CapacityProxy(
        sandbox.dynamodb.url, read_units=50_000, write_units=share, key_range_write_units=share / 10
    ).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)  # the worker processes inherit it
    try:
        # Not split, so one segment writes the hot key while the others (all at once) write the rest.
        plan = ddbnb.plan_migration(
            table, spec("set_flag"), total_segments=8, max_concurrency=8, capacity_share=1.0, split_hot_keys=False
        )
        assert plan.write_units_per_s == share
        summary = ddbnb.migrate(plan, execute=True, run_dir=tmp_path, require_dry_run=False, progress=False)
    finally:
        proxy.stop()
    assert summary is not None and summary["status"] == "SUCCEEDED"  # the hot range was slowed, not failed
    assert (summary["written"], summary["failed"]) == (2_800, 0)
    hot_stats = proxy.key_range_stats(table, HOT_KEY)
    assert hot_stats["throttled_writes"] > 0  # the hot range met its limit ...
    reasons: dict[str, int] = {}
    outputs = [json.loads(entry["Output"]) for entry in result_entries(tmp_path)]
    for output in outputs:
        for reason, count in output.get("throttle_reasons", {}).items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons.get(f"TableWrite{KEY_RANGE}", 0) > 0, reasons  # ... and the worker heard why
    # The rest of the table's rate while the segments without the hot key ran (the hot one runs longer).
    cold = [o for o in outputs if o is not max(outputs, key=lambda o: o["scanned"])]
    offset = time.time() - time.monotonic()  # the proxy counts seconds of the monotonic clock
    during = (min(at(o["started_at"]) for o in cold) - offset, max(at(o["finished_at"]) for o in cold) - offset)
    rest = proxy.steady_write_rate(table, excluding_key=HOT_KEY, during=during)
    print(f"the rest of the table: {rest:.0f} write units/s of a share of {share}; throttles by reason {reasons}")
    assert rest >= 0.8 * share, f"{rest / share:.2f} of the share"
