"""Issue 13, `--config FILE`: brokers configured as Pulsar's are, with a `standalone.conf` /
`broker.conf` / `bookkeeper.conf`-style file and Pulsar's key names; flags override the file.

- A standalone broker started with only `--config F` takes its ports, addresses, cluster name and
  ledger limits from F, serves the official client, and reports the cluster under
  `/admin/v2/clusters`. Keys Magnetar does not read are logged once, as ignored.
- A flag beats the file's key.
- A bad value stops start-up with a message that names the key, the value and the file's line.
- A cluster broker (and its storage node) started from files alone serve the official client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import _NO_PROXY, Broker, magnetar_binary

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigBroker(Broker):
    """`magnetar standalone --config <file> [extra flags]`, run in the data directory's parent (so
    the default ./data lands there)."""

    def __init__(self, root: Path, config_text: str, extra: list[str] | None = None):
        super().__init__(root / "data", root / "magnetar.log")
        self.config_path = root / "standalone.conf"
        self.config_path.write_text(config_text.format(port=self.port, http_port=self.http_port))
        self.extra = extra or []

    def _command(self) -> list[str]:
        return [str(self.binary), "standalone", "--config", str(self.config_path)] + self.extra


def get_json(url: str):
    with _NO_PROXY.open(url, timeout=10) as response:
        return json.loads(response.read())


BASE_CONFIG = """
# A Pulsar standalone.conf, cut down; the unknown keys below are Pulsar's and are ignored.
brokerServicePort={port}
webServicePort={http_port}
bindAddress=127.0.0.1
advertisedAddress=127.0.0.1
clusterName=east-1
managedLedgerMaxEntriesPerLedger=3
numIOThreads=
loadBalancerEnabled=false
brokerDeleteInactiveTopicsEnabled=true
"""


def test_standalone_started_with_only_a_config_file_serves_clients_and_reports_its_cluster(
        tmp_path, make_client, topic):
    broker = ConfigBroker(tmp_path, BASE_CONFIG)
    broker.start()
    try:
        assert get_json(broker.http_url + "/admin/v2/clusters") == ["east-1"]
        t = topic()
        client = make_client(broker)
        consumer = client.subscribe(t, "s")
        producer = client.create_producer(t, batching_enabled=False)
        for i in range(7):
            producer.send(f"m{i}".encode())
        got = []
        for _ in range(7):
            message = consumer.receive(timeout_millis=10_000)
            got.append(message.data().decode())
            consumer.acknowledge(message)
        assert got == [f"m{i}" for i in range(7)]
        # managedLedgerMaxEntriesPerLedger=3 from the file: 7 entries span 3 ledgers.
        stats = get_json(broker.http_url + "/admin/v2/persistent/" + t.removeprefix("persistent://") + "/internalStats")
        assert len(stats["ledgers"]) >= 3, stats["ledgers"]
        # The data went to ./data of the working directory (no --data-dir given).
        assert (tmp_path / "data").is_dir() and any((tmp_path / "data").iterdir())
    finally:
        broker.close()
    log = broker.log_path.read_text(errors="replace")
    ignored = [line for line in log.splitlines() if "config.keys-ignored" in line]
    assert len(ignored) == 1, ignored
    for key in ("loadBalancerEnabled", "brokerDeleteInactiveTopicsEnabled", "numIOThreads"):
        assert key in ignored[0], ignored[0]
    assert "clusterName" not in ignored[0]


def test_a_flag_overrides_the_files_key(tmp_path):
    broker = ConfigBroker(tmp_path, BASE_CONFIG)
    # The file says webServicePort=<http_port>; the flag moves HTTP to another port.
    file_http = broker.http_port
    from conftest import free_port
    broker.http_port = free_port()
    while broker.http_port in (file_http, broker.port):
        broker.http_port = free_port()
    broker.extra = ["--http-port", str(broker.http_port), "--cluster-name", "from-flag"]
    broker.start()
    try:
        assert get_json(broker.http_url + "/admin/v2/clusters") == ["from-flag"]
        with pytest.raises(OSError):
            _NO_PROXY.open(f"http://127.0.0.1:{file_http}/health", timeout=2)
    finally:
        broker.close()


@pytest.mark.parametrize("line, expected", [
    ("brokerServicePort=66x50", "brokerServicePort=66x50 is not valid: expected an integer"),
    ("webServicePort=70000", "webServicePort=70000 is not valid: expected an integer from 1 to 65535"),
    ("managedLedgerMaxEntriesPerLedger=0", "managedLedgerMaxEntriesPerLedger=0 is not valid"),
    ("keepAliveIntervalSeconds=-1", "keepAliveIntervalSeconds=-1 is not valid"),
    ("clusterName=bad/name", "clusterName=bad/name is not valid"),
    ("messagingProtocols=pulsar,mqtt",
     "messagingProtocols=pulsar,mqtt is not valid: expected protocols this build serves (pulsar, kafka); 'mqtt' is not one"),
])
def test_a_bad_value_stops_start_up_naming_the_key_the_value_and_the_file(tmp_path, line, expected):
    config = tmp_path / "standalone.conf"
    config.write_text("bindAddress=127.0.0.1\n# a comment\n" + line + "\n")
    result = subprocess.run(
        [str(magnetar_binary()), "standalone", "--config", str(config)], cwd=tmp_path,
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{config}:3: {expected}" in output, output[-2000:]
    assert not (tmp_path / "data").exists(), "start-up went on after a bad value"


def test_a_missing_config_file_stops_start_up(tmp_path):
    result = subprocess.run(
        [str(magnetar_binary()), "standalone", "--config", str(tmp_path / "nope.conf")], cwd=tmp_path,
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"cannot read configuration file {tmp_path / 'nope.conf'}" in result.stdout + result.stderr


def test_the_shipped_standalone_conf_starts_a_broker(tmp_path, make_client, topic):
    """conf/standalone.conf as shipped (ports and address replaced for the test)."""
    text = (CONF_DIR / "standalone.conf").read_text()
    text = text.replace("brokerServicePort=6650", "brokerServicePort={port}")
    text = text.replace("webServicePort=8080", "webServicePort={http_port}")
    text = text.replace("bindAddress=0.0.0.0", "bindAddress=127.0.0.1")
    broker = ConfigBroker(tmp_path, text)
    broker.start()
    try:
        assert get_json(broker.http_url + "/admin/v2/clusters") == ["standalone"]
        t = topic()
        client = make_client(broker)
        producer = client.create_producer(t)
        reader = client.create_reader(t, __import__("pulsar").MessageId.earliest)
        producer.send(b"hello")
        assert reader.read_next(timeout_millis=10_000).data() == b"hello"
    finally:
        broker.close()
    log = broker.log_path.read_text(errors="replace")
    assert "config.keys-ignored" not in log


def test_cluster_broker_and_storage_node_started_from_config_files_serve_clients(tmp_path, make_client, topic):
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    from cluster import ClusterProcess, LocalCluster
    cluster = LocalCluster(tmp_path / "cluster", storage_nodes=1, brokers=0)
    # The storage node from a bookkeeper.conf.
    node = cluster.storage[0]
    node_conf = tmp_path / "bookkeeper.conf"
    node_conf.write_text(
        f"bookiePort={node.port}\nadvertisedAddress=127.0.0.1\nledgerDirectories={node.data_dir}\n"
        f"metadataServiceUri={cluster.metadata_url}\n# BookKeeper keys Magnetar does not read\njournalWriteBufferSizeKB=64\n")
    node.args = lambda p: ["storage", "--config", str(node_conf), "--bind-address", "127.0.0.1"]
    # The broker from a broker.conf, with Pulsar's form of the etcd URL.
    broker = ClusterProcess("broker-conf", tmp_path / "cluster", None, http=True)
    broker_conf = tmp_path / "broker.conf"
    etcd_port = cluster.etcd.port
    broker_conf.write_text(
        f"metadataStoreUrl=etcd:http://127.0.0.1:{etcd_port}\n"
        f"brokerServicePort={broker.port}\nwebServicePort={broker.http_port}\n"
        "bindAddress=127.0.0.1\nadvertisedAddress=127.0.0.1\nclusterName=west-2\n"
        "metadataStoreSessionTimeoutMillis=3000\n")
    broker.args = lambda p: ["broker", "--config", str(broker_conf)]
    cluster.brokers = [broker]
    cluster.start()
    try:
        assert get_json(broker.http_url + "/admin/v2/clusters") == ["west-2"]
        t = topic()
        client = make_client(f"pulsar://127.0.0.1:{broker.port}")
        consumer = client.subscribe(t, "s")
        producer = client.create_producer(t)
        producer.send(b"across the cluster")
        message = consumer.receive(timeout_millis=15_000)
        assert message.data() == b"across the cluster"
        consumer.acknowledge(message)
    finally:
        cluster.close()
    assert "journalWriteBufferSizeKB" in node.log_path.read_text(errors="replace")
