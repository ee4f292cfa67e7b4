// Host side of scripts/interop/smcr-linux.sh: puts the SMC TCP option (kind 254, length 6,
// magic E2 D4 C3 D9: Linux's TCPOPT_EXP + TCPOPT_SMC_MAGIC, include/net/tcp.h) into the SYN and
// SYN-ACK of every TCP socket made by one command, so that Linux's SMC on the other end sees
// "the peer indicated SMC" (tcp_parse_options -> smc_parse_options sets rx_opt.smc_ok).
// Without it Linux falls back at once: its server declines with SMC_CLC_DECL_PEERNOSMC
// (af_smc.c smc_listen_work: !tcp_sk(newclcsock->sk)->syn_smc), its client does not even send a
// Proposal (__smc_connect: !tcp_sk(smc->clcsock->sk)->syn_smc). User space cannot set TCP
// options, so softrdma cannot send it itself.
//
// How: a BPF_PROG_TYPE_SOCK_OPS program (written here as raw instructions: no clang needed)
// attached to a fresh cgroup v2 child; the command runs in that cgroup, nothing else does.
//   TCP_CONNECT_CB, TCP_LISTEN_CB   -> bpf_sock_ops_cb_flags_set(WRITE_HDR_OPT_CB_FLAG)
//   HDR_OPT_LEN_CB on a SYN/SYN-ACK -> bpf_reserve_hdr_opt(6)
//   WRITE_HDR_OPT_CB on a SYN/SYN-ACK -> bpf_store_hdr_opt({254, 6, E2 D4 C3 D9})
//   ACTIVE/PASSIVE_ESTABLISHED_CB   -> flags off again (nothing more per packet)
//
//   smc-tcp-option CGROUP_DIR COMMAND ARGS...   (root; CGROUP_DIR under a cgroup2 mount, made if
//                                                missing; remove it with rmdir afterwards)
//
// Build: gcc -O2 -Wall -o smc-tcp-option smc-tcp-option.c
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define I(code, dst, src, off, imm) ((struct bpf_insn){ code, dst, src, off, imm })
#define MOV64_REG(d, s) I(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, v) I(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, v)
#define ADD64_IMM(d, v) I(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, v)
#define AND64_IMM(d, v) I(BPF_ALU64 | BPF_AND | BPF_K, d, 0, 0, v)
#define LDX_W(d, s, o) I(BPF_LDX | BPF_MEM | BPF_W, d, s, o, 0)
#define STX_DW(d, s, o) I(BPF_STX | BPF_MEM | BPF_DW, d, s, o, 0)
#define JEQ_IMM(d, v, o) I(BPF_JMP | BPF_JEQ | BPF_K, d, 0, o, v)
#define JA(o) I(BPF_JMP | BPF_JA, 0, 0, o, 0)
#define CALL(f) I(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT() I(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
#define LD_IMM64(d, v) I(BPF_LD | BPF_DW | BPF_IMM, d, 0, 0, (__u32)(v)), I(0, 0, 0, 0, (__u32)((__u64)(v) >> 32))

#define OP offsetof(struct bpf_sock_ops, op)
#define FLAGS offsetof(struct bpf_sock_ops, skb_tcp_flags)

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s CGROUP_DIR COMMAND ARGS...\n", argv[0]); return 2; }
  // option bytes FE 06 E2 D4 C3 D9 (+2 pad bytes) as a little-endian u64 on the stack
  const __u64 opt = 0x0000D9C3D4E206FEull;
  struct bpf_insn prog[] = {
    /*  0 */ MOV64_REG(BPF_REG_6, BPF_REG_1),
    /*  1 */ LDX_W(BPF_REG_2, BPF_REG_6, OP),
    /*  2 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_TCP_CONNECT_CB, 9),          // -> 12 on
    /*  3 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_TCP_LISTEN_CB, 8),           // -> 12
    /*  4 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_HDR_OPT_LEN_CB, 11),         // -> 16 len
    /*  5 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_WRITE_HDR_OPT_CB, 16),       // -> 22 write
    /*  6 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, 2),   // -> 9 off
    /*  7 */ JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, 1),  // -> 9
    /*  8 */ JA(24),                                                      // -> 33 out
    /*  9 */ MOV64_REG(BPF_REG_1, BPF_REG_6),                             // off:
    /* 10 */ MOV64_IMM(BPF_REG_2, 0),
    /* 11 */ JA(2),                                                       // -> 14
    /* 12 */ MOV64_REG(BPF_REG_1, BPF_REG_6),                             // on:
    /* 13 */ MOV64_IMM(BPF_REG_2, BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG),
    /* 14 */ CALL(BPF_FUNC_sock_ops_cb_flags_set),
    /* 15 */ JA(17),                                                      // -> 33
    /* 16 */ LDX_W(BPF_REG_2, BPF_REG_6, FLAGS),                          // len:
    /* 17 */ AND64_IMM(BPF_REG_2, 0x02),                                  // TCPHDR_SYN
    /* 18 */ JEQ_IMM(BPF_REG_2, 0, 14),                                   // -> 33
    /* 19 */ MOV64_REG(BPF_REG_1, BPF_REG_6),
    /* 20 */ MOV64_IMM(BPF_REG_2, 6), 
    /* 21 */ JA(8),                                                       // -> 30 (r3 = 0, call reserve)
    /* 22 */ LDX_W(BPF_REG_2, BPF_REG_6, FLAGS),                          // write:
    /* 23 */ AND64_IMM(BPF_REG_2, 0x02),
    /* 24 */ JEQ_IMM(BPF_REG_2, 0, 8),                                    // -> 33
    /* 25 */ LD_IMM64(BPF_REG_3, opt),                                    // 25-26
    /* 27 */ STX_DW(BPF_REG_10, BPF_REG_3, -8),
    /* 28 */ MOV64_REG(BPF_REG_1, BPF_REG_6),
    /* 29 */ JA(5),                                                       // -> 35
    /* 30 */ MOV64_IMM(BPF_REG_3, 0),
    /* 31 */ CALL(BPF_FUNC_reserve_hdr_opt),
    /* 32 */ JA(0),
    /* 33 */ MOV64_IMM(BPF_REG_0, 1),                                     // out:
    /* 34 */ EXIT(),
    /* 35 */ MOV64_REG(BPF_REG_2, BPF_REG_10),                            // store:
    /* 36 */ ADD64_IMM(BPF_REG_2, -8),
    /* 37 */ MOV64_IMM(BPF_REG_3, 6),
    /* 38 */ MOV64_IMM(BPF_REG_4, 0),
    /* 39 */ CALL(BPF_FUNC_store_hdr_opt),
    /* 40 */ JA(-8),                                                      // -> 33
  };
  static char log[65536];
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SOCK_OPS;
  a.insns = (__u64)(unsigned long)prog;
  a.insn_cnt = sizeof prog / sizeof prog[0];
  a.license = (__u64)(unsigned long)"Dual MIT/GPL";
  a.log_buf = (__u64)(unsigned long)log;
  a.log_size = sizeof log;
  a.log_level = 1;
  int pfd = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a);
  if (pfd < 0) { fprintf(stderr, "BPF_PROG_LOAD: %s\n%s\n", strerror(errno), log); return 1; }
  mkdir(argv[1], 0755);
  int cfd = open(argv[1], O_RDONLY | O_DIRECTORY);
  if (cfd < 0) { fprintf(stderr, "open %s: %s\n", argv[1], strerror(errno)); return 1; }
  memset(&a, 0, sizeof a);
  a.target_fd = cfd;
  a.attach_bpf_fd = pfd;
  a.attach_type = BPF_CGROUP_SOCK_OPS;
  if (syscall(SYS_bpf, BPF_PROG_ATTACH, &a, sizeof a) < 0 && errno != EEXIST) { fprintf(stderr, "BPF_PROG_ATTACH: %s\n", strerror(errno)); return 1; }
  char path[4096];
  snprintf(path, sizeof path, "%s/cgroup.procs", argv[1]);
  FILE *f = fopen(path, "w");
  if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0) { fprintf(stderr, "joining %s: %s\n", path, strerror(errno)); return 1; }
  close(cfd);
  close(pfd);
  execvp(argv[2], argv + 2);
  fprintf(stderr, "exec %s: %s\n", argv[2], strerror(errno));
  return 127;
}
