import { Access } from '../index.js';
export { QpAttr, QpState, type QP } from '../index.js';
export const RC_DEFAULT_ACCESS = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC;
