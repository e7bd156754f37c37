/*
 * DPDK keeps its fast path in static-inline functions and macros, which have no symbol
 * to link against. These one-line wrappers give each a symbol; the Rust side declares
 * them through bindgen like any other DPDK function.
 */
#ifndef PRIVLINK_SHIM_H
#define PRIVLINK_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

uint16_t plk_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t plk_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *plk_pktmbuf_alloc(struct rte_mempool *mp);
int plk_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int n);
void plk_pktmbuf_free(struct rte_mbuf *m);
char *plk_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *plk_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *plk_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int plk_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t plk_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t plk_pktmbuf_tailroom(const struct rte_mbuf *m);
uint32_t plk_mbuf_rss_hash(const struct rte_mbuf *m);
/* hash.usr: "user defined tags", the same word as the RSS hash the PMD wrote at RX. */
uint32_t plk_mbuf_user_tag(const struct rte_mbuf *m);
void plk_mbuf_set_user_tag(struct rte_mbuf *m, uint32_t tag);
struct rte_mempool *plk_mbuf_pool(const struct rte_mbuf *m);

unsigned int plk_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);
unsigned int plk_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n);
unsigned int plk_ring_count(const struct rte_ring *r);

int plk_errno(void);
unsigned int plk_lcore_id(void);
uint64_t plk_rdtsc(void);
void plk_pause(void);

/* Layout checks: Rust compares these with what bindgen generated. */
unsigned long plk_sizeof_mbuf(void);
unsigned long plk_offsetof_mbuf_data_len(void);
unsigned long plk_offsetof_mbuf_pool(void);
/* The rte_flow structures privlink fills in (flow.rs): unions and bitfields throughout. */
unsigned long plk_sizeof_flow_attr(void);
unsigned long plk_sizeof_flow_item(void);
unsigned long plk_sizeof_flow_item_vlan(void);
unsigned long plk_sizeof_flow_item_ipv4(void);
unsigned long plk_sizeof_flow_item_tcp(void);
unsigned long plk_sizeof_flow_item_udp(void);
unsigned long plk_offsetof_flow_item_ipv4_dst(void);
unsigned long plk_sizeof_flow_item_ipv6(void);
unsigned long plk_offsetof_flow_item_ipv6_dst(void);
unsigned long plk_offsetof_flow_item_tcp_dst(void);
unsigned long plk_offsetof_flow_item_udp_dst(void);

#endif
