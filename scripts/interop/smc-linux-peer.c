// The Linux side of scripts/interop/smcr-linux.sh: a small static program for the rxe VM's guest
// (Debian 12, kernel 6.1, no smc-tools, no python) that talks Linux's own SMC (AF_SMC = 43).
//
//   smc-linux-peer ueid-add NAME          add a user EID (SMC_GEN_NETLINK SMC_NETLINK_ADD_UEID;
//                                         the name is blank-padded to 32, as smc_clc.c wants)
//   smc-linux-peer ueid-dump              list the user EIDs (SMC_NETLINK_DUMP_UEID)
//   smc-linux-peer pnet-add PNETID ETH IB PORT
//                                         put ETH and IB/PORT under one PNET ID (SMC_PNETID
//                                         family, SMC_PNETID_ADD; smc-tools: smc_pnet -a): Linux
//                                         6.1 finds an rxe device for a TCP connection only this
//                                         way (smc_pnet.c smc_pnet_find_rdma_dev needs
//                                         ops.get_netdev, which 6.1's rxe does not have)
//   smc-linux-peer server PORT COUNT      AF_SMC echo server on 0.0.0.0:PORT: echoes each of COUNT
//                                         connections (concurrently, one child each) until EOF,
//                                         then closes; prints one line per connection
//   smc-linux-peer client HOST PORT BYTES CONNS [SEED]
//                                         CONNS concurrent AF_SMC connections; each sends BYTES of
//                                         the xorshift32 pattern (test/helpers/pattern.ts, seed
//                                         SEED+k), shuts down its write side, reads the echo to EOF
//                                         and compares it byte for byte
//   smc-linux-peer diag                   smc_diag dump of all SMC sockets (mode, fallback reason,
//                                         link group, cursors)
//
// Every connection line says its smc_diag mode (SMCR / TCP fallback with Linux's reason and the
// peer's Decline diagnosis), looked up by the socket's inode while it is still open.
//
// Build: gcc -static -O2 -Wall -o smc-linux-peer smc-linux-peer.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/smc.h>
#include <linux/smc_diag.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_SMC
#define AF_SMC 43
#endif
#define SMCPROTO_SMC 0

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ generic netlink */

static int genl_family(int fd, const char *name) {
  struct { struct nlmsghdr n; struct genlmsghdr g; char buf[256]; } req;
  memset(&req, 0, sizeof req);
  req.n.nlmsg_type = GENL_ID_CTRL;
  req.n.nlmsg_flags = NLM_F_REQUEST;
  req.n.nlmsg_seq = 1;
  req.g.cmd = CTRL_CMD_GETFAMILY;
  req.g.version = 1;
  struct nlattr *a = (struct nlattr *)req.buf;
  a->nla_type = CTRL_ATTR_FAMILY_NAME;
  a->nla_len = NLA_HDRLEN + strlen(name) + 1;
  strcpy((char *)a + NLA_HDRLEN, name);
  req.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN) + NLA_ALIGN(a->nla_len);
  if (send(fd, &req, req.n.nlmsg_len, 0) < 0) return -1;
  char rb[8192];
  int n = recv(fd, rb, sizeof rb, 0);
  if (n < 0) return -1;
  struct nlmsghdr *h = (struct nlmsghdr *)rb;
  if (h->nlmsg_type == NLMSG_ERROR) { errno = -((struct nlmsgerr *)NLMSG_DATA(h))->error; return -1; }
  int len = h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
  struct nlattr *at = (struct nlattr *)((char *)NLMSG_DATA(h) + GENL_HDRLEN);
  while (len >= (int)NLA_HDRLEN && at->nla_len >= NLA_HDRLEN) {
    if ((at->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_FAMILY_ID) return *(uint16_t *)((char *)at + NLA_HDRLEN);
    len -= NLA_ALIGN(at->nla_len);
    at = (struct nlattr *)((char *)at + NLA_ALIGN(at->nla_len));
  }
  errno = ENOENT;
  return -1;
}

static int smc_genl(int cmd, const char *ueid, int dump) {
  int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
  if (fd < 0) { perror("netlink"); return 1; }
  int fam = genl_family(fd, SMC_GENL_FAMILY_NAME);
  if (fam < 0) { fprintf(stderr, "genl family %s: %s (is smc.ko loaded?)\n", SMC_GENL_FAMILY_NAME, strerror(errno)); return 1; }
  struct { struct nlmsghdr n; struct genlmsghdr g; char buf[64]; } req;
  memset(&req, 0, sizeof req);
  req.n.nlmsg_type = fam;
  req.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (dump ? NLM_F_DUMP : 0);
  req.n.nlmsg_seq = 2;
  req.g.cmd = cmd;
  req.g.version = SMC_GENL_FAMILY_VERSION;
  req.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
  if (ueid) {
    // smc_nl_add_ueid (smc_clc.c): nla_len(attr) must be SMC_MAX_EID_LEN + 1 (32 chars and a NUL),
    // blank-padded, uppercase letters, digits, '.', '-' (smc_clc_ueid_valid)
    struct nlattr *a = (struct nlattr *)req.buf;
    a->nla_type = SMC_NLA_EID_TABLE_ENTRY;
    a->nla_len = NLA_HDRLEN + SMC_MAX_EID_LEN + 1;
    char *p = (char *)a + NLA_HDRLEN;
    memset(p, ' ', SMC_MAX_EID_LEN);
    p[SMC_MAX_EID_LEN] = 0;
    size_t l = strlen(ueid);
    memcpy(p, ueid, l > SMC_MAX_EID_LEN ? SMC_MAX_EID_LEN : l);
    req.n.nlmsg_len += NLA_ALIGN(a->nla_len);
  }
  if (send(fd, &req, req.n.nlmsg_len, 0) < 0) { perror("send"); return 1; }
  char rb[16384];
  for (;;) {
    int n = recv(fd, rb, sizeof rb, 0);
    if (n < 0) { perror("recv"); return 1; }
    for (struct nlmsghdr *h = (struct nlmsghdr *)rb; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        int e = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
        if (e) { fprintf(stderr, "smc netlink cmd %d: %s\n", cmd, strerror(e)); return e == EEXIST ? 0 : 1; }
        return 0;
      }
      int len = h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
      struct nlattr *at = (struct nlattr *)((char *)NLMSG_DATA(h) + GENL_HDRLEN);
      while (len >= (int)NLA_HDRLEN && at->nla_len >= NLA_HDRLEN) {
        if ((at->nla_type & NLA_TYPE_MASK) == SMC_NLA_EID_TABLE_ENTRY) printf("ueid '%.*s'\n", (int)(at->nla_len - NLA_HDRLEN), (char *)at + NLA_HDRLEN);
        len -= NLA_ALIGN(at->nla_len);
        at = (struct nlattr *)((char *)at + NLA_ALIGN(at->nla_len));
      }
    }
  }
}

static struct nlattr *put_attr(char *buf, int *off, int type, const void *data, int len) {
  struct nlattr *a = (struct nlattr *)(buf + *off);
  a->nla_type = type;
  a->nla_len = NLA_HDRLEN + len;
  memcpy((char *)a + NLA_HDRLEN, data, len);
  *off += NLA_ALIGN(a->nla_len);
  return a;
}

static int pnet_add(const char *pnetid, const char *eth, const char *ib, int port) {
  int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
  if (fd < 0) { perror("netlink"); return 1; }
  int fam = genl_family(fd, SMCR_GENL_FAMILY_NAME);
  if (fam < 0) { fprintf(stderr, "genl family %s: %s\n", SMCR_GENL_FAMILY_NAME, strerror(errno)); return 1; }
  struct { struct nlmsghdr n; struct genlmsghdr g; char buf[256]; } req;
  memset(&req, 0, sizeof req);
  req.n.nlmsg_type = fam;
  req.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.n.nlmsg_seq = 3;
  req.g.cmd = SMC_PNETID_ADD;
  req.g.version = SMCR_GENL_FAMILY_VERSION;
  int off = 0;
  uint8_t p = port;
  put_attr(req.buf, &off, SMC_PNETID_NAME, pnetid, strlen(pnetid) + 1);
  put_attr(req.buf, &off, SMC_PNETID_ETHNAME, eth, strlen(eth) + 1);
  put_attr(req.buf, &off, SMC_PNETID_IBNAME, ib, strlen(ib) + 1);
  put_attr(req.buf, &off, SMC_PNETID_IBPORT, &p, 1);
  req.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN) + off;
  if (send(fd, &req, req.n.nlmsg_len, 0) < 0) { perror("send"); return 1; }
  char rb[4096];
  int n = recv(fd, rb, sizeof rb, 0);
  if (n < 0) { perror("recv"); return 1; }
  struct nlmsghdr *h = (struct nlmsghdr *)rb;
  if (h->nlmsg_type == NLMSG_ERROR) {
    int e = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
    if (e && e != EEXIST) { fprintf(stderr, "SMC_PNETID_ADD: %s\n", strerror(e)); return 1; }
  }
  printf("pnetid %s: %s and %s port %d\n", pnetid, eth, ib, port);
  return 0;
}

/* ------------------------------------------------------------------ smc_diag */

static const char *diag_mode(int m) {
  return m == SMC_DIAG_MODE_SMCR ? "SMCR" : m == SMC_DIAG_MODE_FALLBACK_TCP ? "TCP" : m == SMC_DIAG_MODE_SMCD ? "SMCD" : "?";
}

/* Dump the SMC sockets; with ino != 0 print only that one (prefixed), return 0 when found. */
static int smc_diag(unsigned long ino, const char *prefix, char *out, size_t outlen) {
  int fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG);
  if (fd < 0) { perror("sock_diag"); return -1; }
  struct { struct nlmsghdr n; struct smc_diag_req r; } req;
  memset(&req, 0, sizeof req);
  req.n.nlmsg_len = sizeof req;
  req.n.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.n.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.diag_family = AF_SMC;
  req.r.diag_ext = (1 << (SMC_DIAG_CONNINFO - 1)) | (1 << (SMC_DIAG_LGRINFO - 1)) | (1 << (SMC_DIAG_SHUTDOWN - 1));
  if (send(fd, &req, sizeof req, 0) < 0) { perror("send diag"); close(fd); return -1; }
  static char rb[65536];
  int found = -1;
  for (;;) {
    int n = recv(fd, rb, sizeof rb, 0);
    if (n <= 0) break;
    for (struct nlmsghdr *h = (struct nlmsghdr *)rb; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) { close(fd); return found; }
      if (h->nlmsg_type == NLMSG_ERROR) { fprintf(stderr, "smc_diag: %s (smc_diag.ko loaded?)\n", strerror(-((struct nlmsgerr *)NLMSG_DATA(h))->error)); close(fd); return -1; }
      struct smc_diag_msg *m = NLMSG_DATA(h);
      if (ino && m->diag_inode != ino) continue;
      char line[1024];
      int o = 0;
      char src[64], dst[64];
      inet_ntop(AF_INET, m->id.idiag_src, src, sizeof src);
      inet_ntop(AF_INET, m->id.idiag_dst, dst, sizeof dst);
      o += snprintf(line + o, sizeof line - o, "%smode=%s state=%d %s:%u->%s:%u ino=%llu", prefix, diag_mode(m->diag_mode), m->diag_state,
                    src, ntohs(m->id.idiag_sport), dst, ntohs(m->id.idiag_dport), (unsigned long long)m->diag_inode);
      int len = h->nlmsg_len - NLMSG_LENGTH(sizeof *m);
      struct nlattr *at = (struct nlattr *)((char *)m + NLMSG_ALIGN(sizeof *m));
      while (len >= (int)NLA_HDRLEN && at->nla_len >= NLA_HDRLEN) {
        void *d = (char *)at + NLA_HDRLEN;
        switch (at->nla_type) {
          case SMC_DIAG_FALLBACK: {
            struct smc_diag_fallback *f = d;
            if (m->diag_mode == SMC_DIAG_MODE_FALLBACK_TCP)
              o += snprintf(line + o, sizeof line - o, " fallback_reason=0x%08x peer_diagnosis=0x%08x", f->reason, f->peer_diagnosis);
            break;
          }
          case SMC_DIAG_CONNINFO: {
            struct smc_diag_conninfo *c = d;
            o += snprintf(line + o, sizeof line - o, " token=0x%x sndbuf=%u rmbe=%u peer_rmbe=%u rx_prod=%u:%u tx_prod=%u:%u", c->token,
                          c->sndbuf_size, c->rmbe_size, c->peer_rmbe_size, c->rx_prod.wrap, c->rx_prod.count, c->tx_prod.wrap, c->tx_prod.count);
            break;
          }
          case SMC_DIAG_LGRINFO: {
            struct smc_diag_lgrinfo *l = d;
            o += snprintf(line + o, sizeof line - o, " lgr_role=%s link=%u dev=%.*s/%u gid=%.40s peer_gid=%.40s", l->role ? "server" : "client",
                          l->lnk[0].link_id, IB_DEVICE_NAME_MAX, l->lnk[0].ibname, l->lnk[0].ibport, l->lnk[0].gid, l->lnk[0].peer_gid);
            break;
          }
          case SMC_DIAG_SHUTDOWN:
            o += snprintf(line + o, sizeof line - o, " shutdown=%u", *(uint8_t *)d);
            break;
        }
        len -= NLA_ALIGN(at->nla_len);
        at = (struct nlattr *)((char *)at + NLA_ALIGN(at->nla_len));
      }
      if (out) snprintf(out, outlen, "%s", line);
      else printf("%s\n", line);
      found = 0;
    }
  }
  close(fd);
  return found;
}

static unsigned long inode_of(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? (unsigned long)st.st_ino : 0;
}

/* ------------------------------------------------------------------ data */

static void pattern(uint8_t *b, size_t n, uint32_t seed) {  // test/helpers/pattern.ts
  uint32_t x = seed ? seed : 1;
  for (size_t i = 0; i + 4 <= n; i += 4) {
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    memcpy(b + i, &x, 4);  // little endian host
  }
}

static uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n) {
  while (n--) { h ^= *p++; h *= 16777619u; }
  return h;
}

static void echo_conn(int fd, int k, const char *peer) {
  static uint8_t buf[1 << 16];
  uint64_t total = 0;
  uint32_t h = 2166136261u;
  char info[1024] = "mode=?";
  int got_info = 0;
  double t0 = now();
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) { if (errno == EINTR) continue; printf("server conn %d from %s: read error %s\n", k, peer, strerror(errno)); break; }
    if (n == 0) break;
    if (!got_info) { got_info = smc_diag(inode_of(fd), "", info, sizeof info) == 0; }
    h = fnv1a(h, buf, n);
    total += n;
    for (ssize_t o = 0; o < n;) {
      ssize_t w = write(fd, buf + o, n - o);
      if (w < 0) { if (errno == EINTR) continue; printf("server conn %d: write error %s\n", k, strerror(errno)); close(fd); return; }
      o += w;
    }
  }
  if (!got_info) smc_diag(inode_of(fd), "", info, sizeof info);
  int rc = close(fd);
  printf("server conn %d from %s: echoed %llu bytes fnv1a=%08x in %.2f s, close=%d, %s\n", k, peer, (unsigned long long)total, h, now() - t0, rc, info);
  fflush(stdout);
}

static int server(int port, int count) {
  int ls = socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC);
  if (ls < 0) { perror("socket(AF_SMC)"); return 1; }
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
  if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
  if (listen(ls, 64) < 0) { perror("listen"); return 1; }
  printf("listening on AF_SMC 0.0.0.0:%d for %d connections\n", port, count);
  fflush(stdout);
  for (int k = 0; k < count; k++) {
    struct sockaddr_in pa;
    socklen_t pl = sizeof pa;
    int fd = accept(ls, (struct sockaddr *)&pa, &pl);
    if (fd < 0) { perror("accept"); return 1; }
    char peer[64];
    snprintf(peer, sizeof peer, "%s:%u", inet_ntoa(pa.sin_addr), ntohs(pa.sin_port));
    pid_t p = fork();
    if (p == 0) { close(ls); echo_conn(fd, k, peer); _exit(0); }
    close(fd);
  }
  close(ls);
  int st, bad = 0;
  while (wait(&st) > 0) if (!WIFEXITED(st) || WEXITSTATUS(st)) bad++;
  printf("server done: %d connections, %d failed\n", count, bad);
  return bad != 0;
}

static int client_conn(const char *host, int port, size_t bytes, int k, uint32_t seed) {
  uint8_t *want = malloc(bytes), *got = malloc(bytes);
  pattern(want, bytes, seed);
  int fd = socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC);
  if (fd < 0) { perror("socket(AF_SMC)"); return 1; }
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  inet_pton(AF_INET, host, &a.sin_addr);
  double t0 = now();
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { printf("client conn %d: connect: %s\n", k, strerror(errno)); return 1; }
  char info[1024] = "mode=?";
  smc_diag(inode_of(fd), "", info, sizeof info);
  fcntl(fd, F_SETFL, O_NONBLOCK);
  size_t sent = 0, rcvd = 0;
  int wr_shut = 0;
  while (rcvd < bytes + 1) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN | (sent < bytes ? POLLOUT : 0) };
    if (poll(&pfd, 1, 60000) <= 0) { printf("client conn %d: stalled (sent %zu, received %zu)\n", k, sent, rcvd); return 1; }
    if (sent < bytes && (pfd.revents & POLLOUT)) {
      ssize_t w = write(fd, want + sent, bytes - sent > 262144 ? 262144 : bytes - sent);
      if (w > 0) sent += w;
      else if (w < 0 && errno != EAGAIN) { printf("client conn %d: write: %s\n", k, strerror(errno)); return 1; }
    }
    if (sent == bytes && !wr_shut) { shutdown(fd, SHUT_WR); wr_shut = 1; }
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = read(fd, rcvd < bytes ? got + rcvd : (uint8_t[1]){0}, rcvd < bytes ? bytes - rcvd : 1);
      if (r > 0) rcvd += r;
      else if (r == 0) break;
      else if (errno != EAGAIN) { printf("client conn %d: read: %s\n", k, strerror(errno)); return 1; }
    }
  }
  double dt = now() - t0;
  int rc = close(fd);
  int ok = rcvd == bytes && memcmp(want, got, bytes) == 0;
  size_t firstbad = 0;
  if (!ok && rcvd >= bytes) while (firstbad < bytes && want[firstbad] == got[firstbad]) firstbad++;
  printf("client conn %d: sent %zu received %zu %s fnv1a=%08x in %.2f s (%.1f MB/s), close=%d, %s\n", k, sent, rcvd,
         ok ? "echo verified" : rcvd != bytes ? "LENGTH MISMATCH" : "DATA MISMATCH", fnv1a(2166136261u, want, bytes), dt, 2 * bytes / dt / 1e6, rc, info);
  if (!ok && rcvd == bytes) printf("client conn %d: first difference at byte %zu\n", k, firstbad);
  fflush(stdout);
  return !ok;
}

static int client(const char *host, int port, size_t bytes, int conns, uint32_t seed) {
  for (int k = 0; k < conns; k++) {
    pid_t p = fork();
    if (p == 0) _exit(client_conn(host, port, bytes, k, seed + k));
    // the first connection makes the link group; the others join it (Linux serializes first
    // contacts, smc_client_lgr_pending), so let the first one get through its handshake
    if (k == 0 && conns > 1) usleep(1500000);
  }
  int st, bad = 0;
  while (wait(&st) > 0) if (!WIFEXITED(st) || WEXITSTATUS(st)) bad++;
  printf("client done: %d connections, %d failed\n", conns, bad);
  return bad != 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 3 && !strcmp(argv[1], "ueid-add")) return smc_genl(SMC_NETLINK_ADD_UEID, argv[2], 0);
  if (argc >= 6 && !strcmp(argv[1], "pnet-add")) return pnet_add(argv[2], argv[3], argv[4], atoi(argv[5]));
  if (argc >= 2 && !strcmp(argv[1], "ueid-dump")) return smc_genl(SMC_NETLINK_DUMP_UEID, NULL, 1);
  if (argc >= 4 && !strcmp(argv[1], "server")) return server(atoi(argv[2]), atoi(argv[3]));
  if (argc >= 6 && !strcmp(argv[1], "client")) return client(argv[2], atoi(argv[3]), strtoull(argv[4], 0, 0), atoi(argv[5]), argc > 6 ? strtoul(argv[6], 0, 0) : 1);
  if (argc >= 2 && !strcmp(argv[1], "diag")) return smc_diag(0, "", NULL, 0) < 0 ? 0 : 0;
  fprintf(stderr, "usage: %s ueid-add NAME | ueid-dump | pnet-add PNETID ETH IB PORT | server PORT COUNT | client HOST PORT BYTES CONNS [SEED] | diag\n", argv[0]);
  return 2;
}
