"""LocalKafkaCluster's configuration and storage formatting (fast: no broker is started)."""

from __future__ import annotations

import pytest

from deploy.kafka.cli import cluster_for
from deploy.kafka.launcher import BrokerError, LocalKafkaCluster, LocalKafkaNode, free_port
from deploy.kafka.settings import BrokerSettings


def test_three_nodes_share_one_quorum_and_cluster_id(tmp_path):
    cluster = LocalKafkaCluster(tmp_path, nodes=3, ports=[19092, 19094, 19096], controller_ports=[19093, 19095, 19097])
    props = [node.server_properties() for node in cluster.members]
    assert {p["controller.quorum.voters"] for p in props} == {"1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"}
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert len({node.cluster_id for node in cluster.members}) == 1
    assert {p["default.replication.factor"] for p in props} == {"3"}
    assert {p["offsets.topic.replication.factor"] for p in props} == {"3"}
    assert {p["transaction.state.log.min.isr"] for p in props} == {"2"}
    assert len({node.data_dir for node in cluster.members}) == 3
    assert cluster.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"


def test_cluster_needs_a_port_pair_per_node(tmp_path):
    with pytest.raises(BrokerError, match="one broker port and one controller port per node"):
        LocalKafkaCluster(tmp_path, nodes=3, ports=[1, 2], controller_ports=[3, 4, 5])


def test_cli_lays_out_ports_from_the_base_port(tmp_path):
    cluster = cluster_for(BrokerSettings(), 29092, tmp_path, 3)
    assert cluster.ports == [29092, 29094, 29096]
    assert cluster.controller_ports == [29093, 29095, 29097]


def test_cluster_id_starting_with_a_dash_formats(tmp_path):
    """Random ids are base64: about one in 64 starts with "-", which `-t ID` took for an option."""
    node = LocalKafkaNode(data_dir=tmp_path, port=free_port(), controller_port=free_port(),
                          cluster_id="-QxYx0ZCRvuGnP3KlVvUhw")
    node.format_storage()
    assert "cluster.id=-QxYx0ZCRvuGnP3KlVvUhw" in (node.log_dir / "meta.properties").read_text()


def test_restarted_cluster_keeps_its_cluster_id(tmp_path):
    first = LocalKafkaCluster(tmp_path, nodes=1)
    first.members[0].format_storage()
    again = LocalKafkaCluster(tmp_path, nodes=1)
    assert again.cluster_id == first.cluster_id
