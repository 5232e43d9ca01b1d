"""Issue 15: the schema registry, driven with the official Python client's `pulsar.schema` and the
admin REST API.

- The seeds' `Order` record with AvroSchema and JsonSchema end to end (`msg.value()` typed, the
  consumer fetching the writer's schema with GET_SCHEMA); StringSchema.
- Evolution: adding a field with a default is accepted under FULL (a new version), and a consumer
  with the old schema reads messages of both versions; a field whose type changes raises
  `pulsar.IncompatibleSchema` for producers and for consumers, also after kill -9 and a restart.
- Namespace strategies: ALWAYS_COMPATIBLE accepts the type change; BACKWARD_TRANSITIVE checks every
  version; isAllowAutoUpdateSchema=false only lets known schemas in; schemaValidationEnforced
  refuses producers without a schema.
- REST: upload / get / versions / version / compatibility / delete, 409 for incompatible, 422 with
  a reason for a bad definition, 404 for none; the CLI's `schemas` verbs and the namespace's
  schema policy verbs.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pulsar
import pytest
from pulsar.schema import AvroSchema, Float, Integer, JsonSchema, Record, String, StringSchema

from admin_rest import call
from conftest import magnetar_binary

RECEIVE_MS = 10_000


class Order(Record):
    user_id = String()
    amount = Float()


class OrderV1(Record):
    user_id = String()
    amount = Float()


class OrderV2(Record):
    """OrderV1 and a nullable field with a default: FULL-compatible with it."""
    user_id = String()
    amount = Float()
    coupon = String(default=None, required_default=True)


class OrderStringAmount(Record):
    """OrderV1 with `amount` a string: the contract violation."""
    user_id = String()
    amount = String()


class Counter(Record):
    count = Integer()


def unique(prefix: str) -> str:
    return f"persistent://public/default/{prefix}-{uuid.uuid4().hex[:8]}"


def schema_path(topic: str, rest: str = "schema") -> str:
    tenant, namespace, local = topic.split("://", 1)[1].split("/", 2)
    return f"/admin/v2/schemas/{tenant}/{namespace}/{local}/{rest}"


def test_avro_record_end_to_end(client):
    topic = unique("avro")
    consumer = client.subscribe(topic, "sub", schema=AvroSchema(Order))
    producer = client.create_producer(topic, schema=AvroSchema(Order))
    producer.send(Order(user_id="u-1", amount=12.5))
    msg = consumer.receive(RECEIVE_MS)
    order = msg.value()
    assert isinstance(order, Order)
    assert (order.user_id, order.amount) == ("u-1", 12.5)
    consumer.acknowledge(msg)


def test_json_record_and_string_schema(client):
    topic = unique("json")
    consumer = client.subscribe(topic, "sub", schema=JsonSchema(Order))
    producer = client.create_producer(topic, schema=JsonSchema(Order))
    producer.send(Order(user_id="u-2", amount=3.0))
    assert consumer.receive(RECEIVE_MS).value().user_id == "u-2"

    text_topic = unique("string")
    text_consumer = client.subscribe(text_topic, "sub", schema=StringSchema())
    client.create_producer(text_topic, schema=StringSchema()).send("héllo")
    assert text_consumer.receive(RECEIVE_MS).value() == "héllo"


def test_the_stored_schema_is_what_the_client_sent(broker, client):
    topic = unique("stored")
    client.create_producer(topic, schema=AvroSchema(Order))
    status, answer = call(broker, "GET", schema_path(topic))
    assert status == 200, answer
    assert answer["type"] == "AVRO" and answer["version"] == 0
    assert json.loads(answer["data"]) == Order.schema()
    # A second producer with the same schema reuses version 0.
    client.create_producer(topic, schema=AvroSchema(Order))
    status, answer = call(broker, "GET", schema_path(topic, "versions"))
    assert status == 200 and [v["version"] for v in answer["getSchemaResponses"]] == [0]


def test_evolution_under_full(broker, client):
    topic = unique("evolve")
    old_consumer = client.subscribe(topic, "old", schema=AvroSchema(OrderV1))
    v1 = client.create_producer(topic, schema=AvroSchema(OrderV1))
    v1.send(OrderV1(user_id="a", amount=1.0))
    v2 = client.create_producer(topic, schema=AvroSchema(OrderV2))
    v2.send(OrderV2(user_id="b", amount=2.0, coupon="X"))
    # The old consumer decodes both versions (fetching version 1 from the broker).
    got = [old_consumer.receive(RECEIVE_MS).value() for _ in range(2)]
    assert [(o.user_id, o.amount) for o in got] == [("a", 1.0), ("b", 2.0)]
    status, answer = call(broker, "GET", schema_path(topic, "versions"))
    assert [v["version"] for v in answer["getSchemaResponses"]] == [0, 1]
    # A new consumer with v2 reads v1 data (the coupon's default).
    new_consumer = client.subscribe(topic, "new", schema=AvroSchema(OrderV2),
                                    initial_position=pulsar.InitialPosition.Earliest)
    first = new_consumer.receive(RECEIVE_MS).value()
    assert (first.user_id, first.coupon) == ("a", None)


def test_a_changed_field_type_is_refused_also_after_a_restart(fresh_broker, make_client):
    topic = unique("violate")
    client = make_client(fresh_broker)
    client.create_producer(topic, schema=AvroSchema(OrderV1)).send(OrderV1(user_id="a", amount=1.0))
    with pytest.raises(pulsar.IncompatibleSchema):
        client.create_producer(topic, schema=AvroSchema(OrderStringAmount))
    with pytest.raises(pulsar.IncompatibleSchema):
        client.subscribe(topic, "bad", schema=AvroSchema(OrderStringAmount))
    client.close()
    fresh_broker.kill9()
    fresh_broker.start()
    client = make_client(fresh_broker)
    with pytest.raises(pulsar.IncompatibleSchema):
        client.create_producer(topic, schema=AvroSchema(OrderStringAmount))
    client.create_producer(topic, schema=AvroSchema(OrderV1)).send(OrderV1(user_id="b", amount=2.0))


def test_a_type_change_is_refused(client):
    topic = unique("types")
    client.create_producer(topic, schema=AvroSchema(Order))
    with pytest.raises(pulsar.IncompatibleSchema):
        client.create_producer(topic, schema=StringSchema())


def test_always_compatible_accepts_anything(broker, client, namespace):
    status, _ = call(broker, "PUT", f"/admin/v2/namespaces/{namespace}/schemaCompatibilityStrategy", "ALWAYS_COMPATIBLE")
    assert status == 204
    topic = f"persistent://{namespace}/any"
    client.create_producer(topic, schema=AvroSchema(OrderV1))
    client.create_producer(topic, schema=AvroSchema(OrderStringAmount))
    status, answer = call(broker, "GET", schema_path(topic, "versions"))
    assert [v["version"] for v in answer["getSchemaResponses"]] == [0, 1]


def test_backward_transitive_checks_every_version(broker, client, namespace):
    """v0 has `amount` as a float, v1 drops it, v2 brings it back as a string: fine against v1
    alone (BACKWARD), refused against v0 (BACKWARD_TRANSITIVE)."""
    def record(fields):
        return json.dumps({"type": "record", "name": "Order", "fields": fields})
    v0 = record([{"name": "user_id", "type": "string"}, {"name": "amount", "type": "float", "default": 0}])
    v1 = record([{"name": "user_id", "type": "string"}])
    v2 = record([{"name": "user_id", "type": "string"}, {"name": "amount", "type": "string", "default": ""}])
    for strategy, expected in [("BACKWARD", 200), ("BACKWARD_TRANSITIVE", 409)]:
        status, _ = call(broker, "PUT", f"/admin/v2/namespaces/{namespace}/schemaCompatibilityStrategy", strategy)
        assert status == 204
        topic = f"persistent://{namespace}/{strategy.lower()}"
        for definition in (v0, v1):
            status, answer = call(broker, "POST", schema_path(topic), {"type": "AVRO", "schema": definition})
            assert status == 200, answer
        status, answer = call(broker, "POST", schema_path(topic), {"type": "AVRO", "schema": v2})
        assert status == expected, answer
        if expected == 409:
            assert "amount" in answer["reason"]


def refused_within(create, seconds: float = 10.0) -> pulsar.IncompatibleSchema:
    """Namespace policies reach producers within about a second (a cache): the error once they do."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            create().close()
        except pulsar.IncompatibleSchema as e:
            return e
        assert time.monotonic() < deadline, "the producer was still accepted"
        time.sleep(0.2)


def test_auto_update_off_and_validation_enforced(broker, client, namespace):
    topic = f"persistent://{namespace}/locked"
    client.create_producer(topic, schema=AvroSchema(OrderV1))
    assert call(broker, "POST", f"/admin/v2/namespaces/{namespace}/isAllowAutoUpdateSchema", False)[0] == 204
    assert call(broker, "GET", f"/admin/v2/namespaces/{namespace}/isAllowAutoUpdateSchema") == (200, False)
    attempts = iter(range(1000))

    def new_version():
        # A new compatible schema each attempt: one accepted before the policy applied is not reused.
        definition = dict(OrderV1.schema())
        definition["fields"] = definition["fields"] + [
            {"name": f"extra_{next(attempts)}", "type": ["null", "string"], "default": None}]
        return client.create_producer(topic, schema=AvroSchema(None, schema_definition=definition))
    refused_within(new_version)
    client.create_producer(topic, schema=AvroSchema(OrderV1))  # the known schema still works
    # Without a schema: allowed until validation is enforced.
    client.create_producer(topic).close()
    assert call(broker, "POST", f"/admin/v2/namespaces/{namespace}/schemaValidationEnforced", True)[0] == 204
    assert call(broker, "GET", f"/admin/v2/namespaces/{namespace}/schemaValidationEnforced") == (200, True)
    refused_within(lambda: client.create_producer(topic))


def test_rest_upload_get_versions_delete(broker):
    topic = unique("rest")
    definition = json.dumps(Counter.schema())
    assert call(broker, "GET", schema_path(topic))[0] == 404
    status, answer = call(broker, "POST", schema_path(topic), {"type": "AVRO", "schema": definition, "properties": {"a": "1"}})
    assert status == 200, answer
    assert answer == {"version": {"version": 0}}
    status, answer = call(broker, "GET", schema_path(topic, "schema/0"))
    assert status == 200 and answer["properties"] == {"a": "1"} and json.loads(answer["data"]) == Counter.schema()
    assert call(broker, "POST", schema_path(topic, "version"), {"type": "AVRO", "schema": definition}) == (200, {"version": 0})
    status, answer = call(broker, "POST", schema_path(topic, "compatibility"),
                          {"type": "AVRO", "schema": json.dumps(OrderV1.schema())})
    assert status == 409, answer
    status, answer = call(broker, "POST", schema_path(topic, "compatibility"), {"type": "AVRO", "schema": definition})
    assert status == 202 and answer == {"compatibility": True, "schemaCompatibilityStrategy": "FULL"}
    status, answer = call(broker, "DELETE", schema_path(topic))
    assert status == 200 and answer == {"version": 1}
    assert call(broker, "GET", schema_path(topic))[0] == 404
    assert call(broker, "GET", schema_path(topic, "versions")) == (200, {"getSchemaResponses": []})
    # After a deletion any schema may come, with the next number.
    status, answer = call(broker, "POST", schema_path(topic), {"type": "STRING", "schema": ""})
    assert status == 200 and answer == {"version": {"version": 2}}


@pytest.mark.parametrize("definition", [
    "{not json",
    json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]}),
    json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "decimal"}]}),
], ids=["not-json", "bad-default", "unknown-type"])
def test_a_bad_definition_is_422_with_a_reason(broker, definition):
    status, answer = call(broker, "POST", schema_path(unique("bad")), {"type": "AVRO", "schema": definition})
    assert status == 422, answer
    assert "Invalid schema definition" in answer["reason"]


def test_a_bad_definition_from_a_client_is_refused(client):
    topic = unique("bad-client")
    bad = AvroSchema(None, schema_definition={"type": "record", "name": "R",
                                              "fields": [{"name": "a", "type": "int", "default": "x"}]})
    with pytest.raises(pulsar.IncompatibleSchema):
        client.create_producer(topic, schema=bad)


def test_cli_schemas_verbs(broker, tmp_path, namespace):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(magnetar_binary()), "admin", "--url", broker.http_url, *args],
                              capture_output=True, text=True, timeout=60)
    topic = f"persistent://{namespace}/cli"
    good = tmp_path / "order.json"
    good.write_text(json.dumps({"type": "AVRO", "schema": OrderV1.schema(), "properties": {}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "AVRO", "schema": json.dumps(OrderStringAmount.schema())}))
    out = cli("schemas", "upload", topic, "-f", str(good))
    assert out.returncode == 0, out.stderr
    out = cli("schemas", "get", topic, "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(json.loads(out.stdout)["data"]) == OrderV1.schema()
    out = cli("schemas", "compatibility", topic, "-f", str(bad))
    assert out.returncode != 0 and "409" in out.stderr and "amount" in out.stderr
    out = cli("namespaces", "set-schema-compatibility-strategy", namespace, "-c", "ALWAYS_COMPATIBLE")
    assert out.returncode == 0, out.stderr
    out = cli("namespaces", "get-schema-compatibility-strategy", namespace)
    assert out.returncode == 0 and "ALWAYS_COMPATIBLE" in out.stdout
    out = cli("schemas", "compatibility", topic, "-f", str(bad))
    assert out.returncode == 0, out.stderr
    out = cli("schemas", "delete", topic)
    assert out.returncode == 0, out.stderr
    out = cli("schemas", "get", topic)
    assert out.returncode != 0 and "404" in out.stderr


def test_a_schema_registered_through_one_broker_is_enforced_by_another(tmp_path):
    from cluster import LocalCluster
    cluster = LocalCluster(tmp_path, storage_nodes=1, brokers=2)
    cluster.start()
    try:
        topic = unique("cluster")
        owner = cluster.owner(topic)
        other = next(b for b in cluster.brokers if b is not owner)
        status, answer = call(other, "POST", schema_path(topic), {"type": "AVRO", "schema": json.dumps(OrderV1.schema())})
        assert status == 200, answer
        client = pulsar.Client(cluster.service_url, operation_timeout_seconds=15)
        try:
            with pytest.raises(pulsar.IncompatibleSchema):
                client.create_producer(topic, schema=AvroSchema(OrderStringAmount))
            producer = client.create_producer(topic, schema=AvroSchema(OrderV1))
            producer.send(OrderV1(user_id="c", amount=1.0))
        finally:
            client.close()
        # The owner's registry answers what the other broker stored.
        status, answer = call(owner, "GET", schema_path(topic))
        assert status == 200 and answer["version"] == 0
    finally:
        cluster.close()


def test_swift_client_with_schemas_interoperates(broker, client, tmp_path):
    """`magnetar client` (MagnetarClient) declares a JSON schema the Python client reads typed, and
    sees the schema version Python's Avro producer stamps."""
    def swift(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(magnetar_binary()), "client", *args, "--url", broker.url],
                              capture_output=True, text=True, timeout=60)
    definition = tmp_path / "order.avsc"
    definition.write_text(json.dumps(Order.schema()))
    topic = unique("swift-json")
    consumer = client.subscribe(topic, "py", schema=JsonSchema(Order))
    out = swift("produce", topic, "-m", json.dumps({"user_id": "sw", "amount": 7.5}),
                "--schema-type", "json", "--schema-file", str(definition))
    assert out.returncode == 0, out.stderr
    order = consumer.receive(RECEIVE_MS).value()
    assert (order.user_id, order.amount) == ("sw", 7.5)
    # A Swift producer with an incompatible definition is refused like Python's.
    bad = tmp_path / "bad.avsc"
    bad.write_text(json.dumps(OrderStringAmount.schema()))
    out = swift("produce", topic, "-m", "{}", "--schema-type", "json", "--schema-file", str(bad))
    assert out.returncode != 0 and "incompatibleschema" in (out.stderr + out.stdout).lower()

    avro_topic = unique("swift-avro")
    client.create_producer(avro_topic, schema=AvroSchema(Order)).send(Order(user_id="py", amount=1.0))
    out = swift("consume", avro_topic, "-s", "sw", "--earliest", "-n", "1", "--timeout", "10", "--show-schema-version",
                "--schema-type", "avro", "--schema-file", str(definition))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split("\t")[-1] == "0"


def test_partitions_share_one_schema_which_goes_with_the_topic(broker, make_client):
    client = make_client(broker)
    topic = unique("parts")
    rest = topic.replace("persistent://", "/admin/v2/persistent/")
    assert call(broker, "PUT", f"{rest}/partitions", 3)[0] == 204
    consumer = client.subscribe(topic, "sub", schema=AvroSchema(Order))
    producer = client.create_producer(topic, schema=AvroSchema(Order))
    for i in range(6):
        producer.send(Order(user_id=f"u{i}", amount=float(i)))
    assert sorted(consumer.receive(RECEIVE_MS).value().user_id for _ in range(6)) == [f"u{i}" for i in range(6)]
    status, answer = call(broker, "GET", schema_path(topic, "versions"))
    assert status == 200 and [v["version"] for v in answer["getSchemaResponses"]] == [0]
    # A partition's schema is its partitioned topic's.
    assert call(broker, "GET", schema_path(topic + "-partition-1"))[1]["version"] == 0
    with pytest.raises(pulsar.IncompatibleSchema):
        client.create_producer(topic + "-partition-2", schema=AvroSchema(OrderStringAmount))
    client.close()
    status, answer = call(broker, "DELETE", f"{rest}/partitions?force=true")
    assert status == 204, answer
    assert call(broker, "GET", schema_path(topic))[0] == 404


def test_a_topic_strategy_overrides_the_namespace(broker, client, namespace, tmp_path):
    topic = f"persistent://{namespace}/own-strategy"
    rest = topic.replace("persistent://", "/admin/v2/persistent/")
    client.create_producer(topic, schema=AvroSchema(OrderV1))
    assert call(broker, "GET", f"{rest}/schemaCompatibilityStrategy") == (200, "UNDEFINED")
    assert call(broker, "GET", f"{rest}/schemaCompatibilityStrategy?applied=true") == (200, "FULL")
    out = subprocess.run([str(magnetar_binary()), "admin", "--url", broker.http_url, "topics",
                          "set-schema-compatibility-strategy", topic, "-s", "ALWAYS_COMPATIBLE"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert call(broker, "GET", f"{rest}/schemaCompatibilityStrategy?applied=true") == (200, "ALWAYS_COMPATIBLE")
    client.create_producer(topic, schema=AvroSchema(OrderStringAmount))  # allowed by the topic's strategy
    # Another topic of the namespace keeps FULL.
    other = f"persistent://{namespace}/namespace-strategy"
    client.create_producer(other, schema=AvroSchema(OrderV1))
    with pytest.raises(pulsar.IncompatibleSchema):
        client.create_producer(other, schema=AvroSchema(OrderStringAmount))
    assert call(broker, "DELETE", f"{rest}/schemaCompatibilityStrategy")[0] == 204
    assert call(broker, "GET", f"{rest}/schemaCompatibilityStrategy") == (200, "UNDEFINED")
    with pytest.raises(pulsar.IncompatibleSchema):
        # FULL again, against the latest (string) version (OrderV1 itself would be reused as version 0).
        client.create_producer(topic, schema=AvroSchema(OrderV2))


def test_protobuf_native_descriptors_are_compared(broker):
    """A FileDescriptorSet encoded by hand (field numbers and types are what is compared)."""
    import base64

    def varint(n: int) -> bytes:
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def ld(field: int, payload: bytes) -> bytes:
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    def vi(field: int, value: int) -> bytes:
        return varint(field << 3) + varint(value)

    def descriptor(fields):  # [(name, number, type)]; 9 = string, 2 = float
        message = ld(1, b"Order") + b"".join(
            ld(2, ld(1, name.encode()) + vi(3, number) + vi(4, 1) + vi(5, kind)) for name, number, kind in fields)
        file = ld(1, b"order.proto") + ld(2, b"shop") + ld(4, message)
        return json.dumps({"fileDescriptorSet": base64.b64encode(ld(1, file)).decode(),
                           "rootMessageTypeName": "shop.Order", "rootFileDescriptorName": "order.proto"})
    topic = unique("proto")
    v1 = descriptor([("user_id", 1, 9), ("amount", 2, 2)])
    assert call(broker, "POST", schema_path(topic), {"type": "PROTOBUF_NATIVE", "schema": v1})[0] == 200
    added = descriptor([("user_id", 1, 9), ("amount", 2, 2), ("coupon", 3, 9)])
    assert call(broker, "POST", schema_path(topic), {"type": "PROTOBUF_NATIVE", "schema": added})[1] == {"version": {"version": 1}}
    changed = descriptor([("user_id", 1, 9), ("amount", 2, 9)])
    status, answer = call(broker, "POST", schema_path(topic), {"type": "PROTOBUF_NATIVE", "schema": changed})
    assert status == 409 and "field 2 (amount)" in answer["reason"], answer
    status, answer = call(broker, "POST", schema_path(topic), {"type": "PROTOBUF_NATIVE", "schema": "{}"})
    assert status == 422, answer


def test_key_value_schemas_over_rest(broker):
    topic = unique("kv")
    kv = {"type": "KEY_VALUE", "schema": json.dumps({"key": "", "value": OrderV1.schema()}),
          "properties": {"key.schema.type": "STRING", "value.schema.type": "AVRO", "kv.encoding.type": "SEPARATED"}}
    assert call(broker, "POST", schema_path(topic), kv)[0] == 200
    status, answer = call(broker, "GET", schema_path(topic))
    assert status == 200 and answer["type"] == "KEY_VALUE"
    assert json.loads(answer["data"]) == {"key": "", "value": OrderV1.schema()}
    bad = dict(kv, schema=json.dumps({"key": "", "value": OrderStringAmount.schema()}))
    assert call(broker, "POST", schema_path(topic), bad)[0] == 409
