// The 'smc' event in the types of softrdma/smc's Socket: on('smc', (info: SmcInfo) => ...) and
// the other listener methods, next to node:net's own events (restated here: an interface that
// declares on() hides the overloads the class inherits from net.Socket). Types only.

 

import type { SmcInfo } from './state.js';

declare module './socket.js' {
  interface Socket {
    addListener(event: 'smc', listener: (info: SmcInfo) => void): this;
    addListener(event: 'close', listener: (hadError: boolean) => void): this;
    addListener(event: 'connect', listener: () => void): this;
    addListener(event: 'connectionAttempt', listener: (ip: string, port: number, family: number) => void): this;
    addListener(event: 'connectionAttemptFailed', listener: (ip: string, port: number, family: number, error: Error) => void): this;
    addListener(event: 'connectionAttemptTimeout', listener: (ip: string, port: number, family: number) => void): this;
    addListener(event: 'data', listener: (data: Buffer) => void): this;
    addListener(event: 'drain', listener: () => void): this;
    addListener(event: 'end', listener: () => void): this;
    addListener(event: 'error', listener: (err: Error) => void): this;
    addListener(event: 'lookup', listener: (err: Error, address: string, family: string | number, host: string) => void): this;
    addListener(event: 'ready', listener: () => void): this;
    addListener(event: 'timeout', listener: () => void): this;
    addListener(event: string | symbol, listener: (...args: any[]) => void): this;
    on(event: 'smc', listener: (info: SmcInfo) => void): this;
    on(event: 'close', listener: (hadError: boolean) => void): this;
    on(event: 'connect', listener: () => void): this;
    on(event: 'connectionAttempt', listener: (ip: string, port: number, family: number) => void): this;
    on(event: 'connectionAttemptFailed', listener: (ip: string, port: number, family: number, error: Error) => void): this;
    on(event: 'connectionAttemptTimeout', listener: (ip: string, port: number, family: number) => void): this;
    on(event: 'data', listener: (data: Buffer) => void): this;
    on(event: 'drain', listener: () => void): this;
    on(event: 'end', listener: () => void): this;
    on(event: 'error', listener: (err: Error) => void): this;
    on(event: 'lookup', listener: (err: Error, address: string, family: string | number, host: string) => void): this;
    on(event: 'ready', listener: () => void): this;
    on(event: 'timeout', listener: () => void): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
    once(event: 'smc', listener: (info: SmcInfo) => void): this;
    once(event: 'close', listener: (hadError: boolean) => void): this;
    once(event: 'connect', listener: () => void): this;
    once(event: 'connectionAttempt', listener: (ip: string, port: number, family: number) => void): this;
    once(event: 'connectionAttemptFailed', listener: (ip: string, port: number, family: number, error: Error) => void): this;
    once(event: 'connectionAttemptTimeout', listener: (ip: string, port: number, family: number) => void): this;
    once(event: 'data', listener: (data: Buffer) => void): this;
    once(event: 'drain', listener: () => void): this;
    once(event: 'end', listener: () => void): this;
    once(event: 'error', listener: (err: Error) => void): this;
    once(event: 'lookup', listener: (err: Error, address: string, family: string | number, host: string) => void): this;
    once(event: 'ready', listener: () => void): this;
    once(event: 'timeout', listener: () => void): this;
    once(event: string | symbol, listener: (...args: any[]) => void): this;
    prependListener(event: 'smc', listener: (info: SmcInfo) => void): this;
    prependListener(event: 'close', listener: (hadError: boolean) => void): this;
    prependListener(event: 'connect', listener: () => void): this;
    prependListener(event: 'connectionAttempt', listener: (ip: string, port: number, family: number) => void): this;
    prependListener(event: 'connectionAttemptFailed', listener: (ip: string, port: number, family: number, error: Error) => void): this;
    prependListener(event: 'connectionAttemptTimeout', listener: (ip: string, port: number, family: number) => void): this;
    prependListener(event: 'data', listener: (data: Buffer) => void): this;
    prependListener(event: 'drain', listener: () => void): this;
    prependListener(event: 'end', listener: () => void): this;
    prependListener(event: 'error', listener: (err: Error) => void): this;
    prependListener(event: 'lookup', listener: (err: Error, address: string, family: string | number, host: string) => void): this;
    prependListener(event: 'ready', listener: () => void): this;
    prependListener(event: 'timeout', listener: () => void): this;
    prependListener(event: string | symbol, listener: (...args: any[]) => void): this;
    prependOnceListener(event: 'smc', listener: (info: SmcInfo) => void): this;
    prependOnceListener(event: 'close', listener: (hadError: boolean) => void): this;
    prependOnceListener(event: 'connect', listener: () => void): this;
    prependOnceListener(event: 'connectionAttempt', listener: (ip: string, port: number, family: number) => void): this;
    prependOnceListener(event: 'connectionAttemptFailed', listener: (ip: string, port: number, family: number, error: Error) => void): this;
    prependOnceListener(event: 'connectionAttemptTimeout', listener: (ip: string, port: number, family: number) => void): this;
    prependOnceListener(event: 'data', listener: (data: Buffer) => void): this;
    prependOnceListener(event: 'drain', listener: () => void): this;
    prependOnceListener(event: 'end', listener: () => void): this;
    prependOnceListener(event: 'error', listener: (err: Error) => void): this;
    prependOnceListener(event: 'lookup', listener: (err: Error, address: string, family: string | number, host: string) => void): this;
    prependOnceListener(event: 'ready', listener: () => void): this;
    prependOnceListener(event: 'timeout', listener: () => void): this;
    prependOnceListener(event: string | symbol, listener: (...args: any[]) => void): this;
    emit(event: 'smc', info: SmcInfo): boolean;
    emit(event: string | symbol, ...args: any[]): boolean;
  }
}

export {};
