// What this machine gives the native CRC (native/crc32.c): a C compiler for the install to
// build it with, and the CPU flags that choose its fold. Shared by the tests that expect it.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

const flags = fs.readFileSync('/proc/cpuinfo', 'utf8');

/** `cc` (or $CC's program) runs. */
export const haveCc = spawnSync((process.env.CC || 'cc').trim().split(/\s+/)[0]!, ['--version']).status === 0;
/** The fold the addon can choose here: 256 (VPCLMULQDQ and AVX2), 128 (PCLMULQDQ) or 0. */
export const cpuFoldBits = !/\bpclmulqdq\b/.test(flags) ? 0 : /\bvpclmulqdq\b/.test(flags) && /\bavx2\b/.test(flags) ? 256 : 128;
