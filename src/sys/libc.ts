// The one koffi handle on the C library. The ism device (memfd, mmap, seals), rxe's socket
// options and the SMC pollers each bind the few functions they need from it.

import koffi from 'koffi';

let so: ReturnType<typeof koffi.load> | undefined;

export function libcLibrary(): ReturnType<typeof koffi.load> {
  so ??= koffi.load('libc.so.6');
  return so;
}
