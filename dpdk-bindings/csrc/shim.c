/* Symbols for DPDK's static-inline fast path; see shim.h. */
#include <rte_ethdev.h>
#include <rte_flow.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <stddef.h>
#include "shim.h"

uint16_t plk_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t plk_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *plk_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int plk_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int n)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void plk_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *plk_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *plk_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *plk_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int plk_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t plk_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t plk_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint32_t plk_mbuf_rss_hash(const struct rte_mbuf *m) { return m->hash.rss; }
uint32_t plk_mbuf_user_tag(const struct rte_mbuf *m) { return m->hash.usr; }
void plk_mbuf_set_user_tag(struct rte_mbuf *m, uint32_t tag) { m->hash.usr = tag; }
struct rte_mempool *plk_mbuf_pool(const struct rte_mbuf *m) { return m->pool; }

unsigned int plk_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned int plk_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned int plk_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

int plk_errno(void) { return rte_errno; }
unsigned int plk_lcore_id(void) { return rte_lcore_id(); }
uint64_t plk_rdtsc(void) { return rte_rdtsc(); }
void plk_pause(void) { rte_pause(); }

unsigned long plk_sizeof_mbuf(void) { return sizeof(struct rte_mbuf); }
unsigned long plk_offsetof_mbuf_data_len(void) { return offsetof(struct rte_mbuf, data_len); }
unsigned long plk_offsetof_mbuf_pool(void) { return offsetof(struct rte_mbuf, pool); }
unsigned long plk_sizeof_flow_attr(void) { return sizeof(struct rte_flow_attr); }
unsigned long plk_sizeof_flow_item(void) { return sizeof(struct rte_flow_item); }
unsigned long plk_sizeof_flow_item_vlan(void) { return sizeof(struct rte_flow_item_vlan); }
unsigned long plk_sizeof_flow_item_ipv4(void) { return sizeof(struct rte_flow_item_ipv4); }
unsigned long plk_sizeof_flow_item_tcp(void) { return sizeof(struct rte_flow_item_tcp); }
unsigned long plk_sizeof_flow_item_udp(void) { return sizeof(struct rte_flow_item_udp); }
unsigned long plk_offsetof_flow_item_ipv4_dst(void) { return offsetof(struct rte_flow_item_ipv4, hdr.dst_addr); }
unsigned long plk_sizeof_flow_item_ipv6(void) { return sizeof(struct rte_flow_item_ipv6); }
unsigned long plk_offsetof_flow_item_ipv6_dst(void) { return offsetof(struct rte_flow_item_ipv6, hdr.dst_addr); }
unsigned long plk_offsetof_flow_item_tcp_dst(void) { return offsetof(struct rte_flow_item_tcp, hdr.dst_port); }
unsigned long plk_offsetof_flow_item_udp_dst(void) { return offsetof(struct rte_flow_item_udp, hdr.dst_port); }
