// SPDX-License-Identifier: GPL-2.0
// Test-only shim for the rxe VM of scripts/interop/smcr-linux.sh (Linux 6.1, Debian 6.1.176).
//
// Linux 6.1's SMC sends on a link only when smc_link_sendable() (net/smc/smc_core.h) finds
// lnk->qp_attr.cur_qp_state == IB_QPS_RTS; smc_wr_remember_qp_attr() (smc_wr.c) fills qp_attr
// with ib_query_qp(). rdma_rxe answers query_qp with a copy of qp->attr (rxe_qp.c
// rxe_qp_to_attr: "*attr = qp->attr"), whose cur_qp_state rxe_qp_from_attr only sets when the
// caller passes IB_QP_CUR_STATE, which SMC never does: it stays 0 (IB_QPS_RESET), so every SMC
// send on an rxe link fails with -ENOLINK (smc_llc_send_confirm_link: smc_wr_tx_link_hold) and
// SMC-R over rxe never confirms a link. This kretprobe makes rxe_query_qp report
// cur_qp_state = qp_state, as hardware drivers (mlx5_ib_query_qp) do.
//
// Second: SMC arms its receive CQ with ib_req_notify_cq(cq, IB_CQ_SOLICITED_MASK) (smc_ib.c,
// smc_wr.c), i.e. flags 3. Hardware drivers take that as "next completion" (mlx5_ib_arm_cq:
// (flags & IB_CQ_SOLICITED_MASK) == IB_CQ_SOLICITED ? REQ_NOT_SOL : REQ_NOT); rxe stores
// cq->notify = 3 (rxe_verbs.c rxe_req_notify_cq) and rxe_cq_post fires only for notify ==
// IB_CQ_NEXT_COMP or (== IB_CQ_SOLICITED and a solicited WC) (rxe_cq.c): the receive CQ never
// fires, and SMC never sees a received message. A kprobe on rxe_req_notify_cq turns flags 3 into
// IB_CQ_NEXT_COMP, the hardware reading. Nothing else changes.
#include <linux/kprobes.h>
#include <linux/module.h>
#include <rdma/ib_verbs.h>

struct saved { struct ib_qp_attr *attr; };

static int entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	((struct saved *)ri->data)->attr = (struct ib_qp_attr *)regs->si;
	return 0;
}

static int ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct ib_qp_attr *attr = ((struct saved *)ri->data)->attr;

	if (attr && regs_return_value(regs) == 0)
		attr->cur_qp_state = attr->qp_state;
	return 0;
}

static int arm_pre(struct kprobe *p, struct pt_regs *regs)
{
	if ((regs->si & IB_CQ_SOLICITED_MASK) == IB_CQ_SOLICITED_MASK)
		regs->si &= ~(unsigned long)IB_CQ_SOLICITED;
	return 0;
}

static struct kprobe kp_arm = {
	.symbol_name = "rxe_req_notify_cq",
	.pre_handler = arm_pre,
};

static struct kretprobe krp = {
	.kp.symbol_name = "rxe_query_qp",
	.entry_handler = entry,
	.handler = ret,
	.data_size = sizeof(struct saved),
	.maxactive = 64,
};

static int __init shim_init(void)
{
	int rc = register_kretprobe(&krp);

	pr_info("rxe_cur_qp_state: kretprobe on rxe_query_qp: %d\n", rc);
	if (rc)
		return rc;
	rc = register_kprobe(&kp_arm);
	pr_info("rxe_cur_qp_state: kprobe on rxe_req_notify_cq: %d\n", rc);
	if (rc)
		unregister_kretprobe(&krp);
	return rc;
}

static void __exit shim_exit(void)
{
	unregister_kprobe(&kp_arm);
	unregister_kretprobe(&krp);
}

module_init(shim_init);
module_exit(shim_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("test shim: SMC-R over rxe in Linux 6.1 (query_qp cur_qp_state, CQ arming with IB_CQ_SOLICITED_MASK)");
