"""A Faust worker for the Kafka endpoint's tests (test_kafka_clients.py): an agent consumes a
topic and counts per key in a table (Faust creates the table's changelog topic and its own
internal topics, and joins a consumer group). Configured from the environment; each processed
record is appended to FAUST_OUT as `key value count`."""

import os

import faust

app = faust.App(
    os.environ["FAUST_APP_ID"],
    broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP']}",
    store="memory://",
    web_enabled=False,
    topic_partitions=2,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=10,
)
source = app.topic(os.environ["FAUST_TOPIC"], key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, partitions=2)


@app.agent(source)
async def count(stream):
    async for key, value in stream.items():
        counts[key] += 1
        with open(os.environ["FAUST_OUT"], "a") as out:
            out.write(f"{key.decode()} {value.decode()} {counts[key]}\n")


if __name__ == "__main__":
    app.main()
