// softrdma/ism: the shared-memory device under SMC-D, usable on its own.
export { IsmDevice, IsmError, Dmb, RemoteDmb, defaultIsmDevice, VIRTUAL_CHID, type IsmDeviceInfo, type IsmStats } from './device.js';
export { SoftrdmaError } from '../abi/errors.js';
