#!/usr/bin/env python3
"""OpenFlow rules for the Open vSwitch peer of scripts/bench.sh (--peers).

Reads the privlinkd configuration the bench runs (a filled-in privlink-bench.toml) and
writes the conntrack pipeline that does what privlinkd does to the same packets, so that
the endpoint, targets, SNAT addresses and neighbour MACs come from one place:

  consumer -> endpoint (in on the consumer VPC's port, to the endpoint's ip and a
  listener's protocol and port):
    table 0  ct(commit, zone=1, nat(dst=TARGETS:PORT))         the listener's targets
    table 1  ct(commit, zone=2, nat(src=SNAT:1024-65535,random)) the service's SNAT range
    table 2  per target: Ethernet source = the provider port, destination = the target's
             static neighbour; dec_ttl; out on the provider port
  target -> consumer (the replies; none arrive in the replay harness, whose provider port
  is a net_null sink, but the pipeline is the whole one):
    table 0  in on the provider port to a SNAT address: ct(zone=2, nat)
    table 3  established: ct(zone=1, nat)
    table 4  established: Ethernet source = the consumer port, destination = the consumer
             VPC's neighbour; dec_ttl; out on the consumer port
  anything else is dropped (the bridge runs fail_mode=secure).

`ct(commit, nat(...))` on a packet of a connection that is already tracked applies the
translation chosen when it was committed (the arguments only matter for a new one), so
every packet of a flow gets the same target and SNAT address and port, as in privlinkd.
conntrack's NAT takes an address range, not a list: the targets (and the SNAT addresses)
of the bench configuration are consecutive addresses with one port, and this script stops
if they are not.

  ovs_flows.py CONFIG --consumer-ofport 1 --provider-ofport 2 --consumer-mac M
               --provider-mac M [--out FILE]
"""

import argparse
import ipaddress
import sys
import tomllib

SNAT_PORT_MIN = 1024  # appliance/src/snat.rs: SNAT ports are drawn from 1024 up


def die(msg):
    sys.exit(f"ovs_flows: {msg}")


def ip_range(addrs, what):
    """'first-last' of consecutive IPv4 addresses, in any order; stops otherwise."""
    ips = sorted(int(ipaddress.IPv4Address(a)) for a in addrs)
    if not ips:
        die(f"no {what}")
    if ips != list(range(ips[0], ips[0] + len(ips))):
        die(f"the {what} are not consecutive addresses, which conntrack NAT needs: {addrs}")
    lo, hi = ipaddress.IPv4Address(ips[0]), ipaddress.IPv4Address(ips[-1])
    return str(lo) if lo == hi else f"{lo}-{hi}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--consumer-ofport", type=int, required=True)
    ap.add_argument("--provider-ofport", type=int, required=True)
    ap.add_argument("--consumer-mac", required=True, help="MAC of the consumer port")
    ap.add_argument("--provider-mac", required=True, help="MAC of the provider port")
    ap.add_argument("--out", help="write here instead of stdout")
    a = ap.parse_args()
    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)

    vpcs = {v["vpc_id"]: v for v in cfg.get("vpcs", [])}
    if len(cfg.get("endpoints", [])) != 1 or len(cfg.get("services", [])) != 1:
        die("expected one service and one endpoint (the bench configuration)")
    ep = cfg["endpoints"][0]
    svc = cfg["services"][0]
    consumer = vpcs[ep["vpc_id"]]
    provider = vpcs[svc["vpc_id"]]
    neigh = {n["ip"]: n["mac"] for v in vpcs.values() for n in v.get("static_neighbours", [])}
    consumer_net = ipaddress.IPv4Interface(consumer["address"]).network
    if len(consumer.get("static_neighbours", [])) != 1:
        die("expected one static neighbour in the consumer VPC (the capture's client MAC)")
    client_mac = consumer["static_neighbours"][0]["mac"]
    snat = ip_range(svc["snat_addresses"], "SNAT addresses")
    cin, pin = a.consumer_ofport, a.provider_ofport

    rules = []
    targets = set()
    for lst in svc["listeners"]:
        proto = lst["protocol"]
        ports = {t["port"] for t in lst["targets"]}
        if len(ports) != 1:
            die(f"the {proto} listener's targets use several ports: {sorted(ports)}")
        tip = [t["ip"] for t in lst["targets"]]
        targets.update(tip)
        rules.append(
            f"table=0,priority=100,in_port={cin},{proto},nw_dst={ep['ip']},tp_dst={lst['port']},"
            f"actions=ct(commit,zone=1,nat(dst={ip_range(tip, proto + ' targets')}:"
            f"{ports.pop()}),table=1)")
    rules.append(
        f"table=1,priority=100,ip,actions=ct(commit,zone=2,"
        f"nat(src={snat}:{SNAT_PORT_MIN}-65535,random),table=2)")
    for t in sorted(targets, key=lambda s: int(ipaddress.IPv4Address(s))):
        if t not in neigh:
            die(f"target {t} has no static neighbour (nothing answers ARP on net_null)")
        rules.append(
            f"table=2,priority=100,ip,nw_dst={t},actions=mod_dl_src:{a.provider_mac},"
            f"mod_dl_dst:{neigh[t]},dec_ttl,output:{pin}")
    # Replies: un-SNAT in zone 2, un-DNAT in zone 1, then back to the consumer.
    for s in svc["snat_addresses"]:
        rules.append(f"table=0,priority=100,in_port={pin},ip,nw_dst={s},"
                     f"actions=ct(zone=2,nat,table=3)")
    rules.append("table=3,priority=100,ct_state=+trk+est,ip,actions=ct(zone=1,nat,table=4)")
    rules.append(
        f"table=4,priority=100,ct_state=+trk+est,ip,nw_dst={consumer_net},"
        f"actions=mod_dl_src:{a.consumer_mac},mod_dl_dst:{client_mac},dec_ttl,output:{cin}")
    for table in (0, 1, 2, 3, 4):
        rules.append(f"table={table},priority=0,actions=drop")
    text = "\n".join(rules) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
