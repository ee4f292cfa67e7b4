// Progress for a step that may take a while: nothing if it ends within a couple of seconds,
// then a line on stderr every second (rewritten in place on a terminal), so stdout keeps
// only the results. SOFTRDMA_PROGRESS_AFTER_MS changes the wait (tests use 0).

export class Progress {
  private timer: NodeJS.Timeout | undefined;
  private shown = false;
  private readonly tty = process.stderr.isTTY === true;
  constructor(private readonly label: string, private readonly total: number, private readonly current: () => number) {
    const after = Number(process.env.SOFTRDMA_PROGRESS_AFTER_MS ?? 2000);
    this.timer = setTimeout(() => this.tick(), Number.isFinite(after) && after >= 0 ? after : 2000);
    this.timer.unref();
  }
  private tick(): void {
    const n = Math.min(this.current(), this.total);
    const line = `  ${this.label}: ${Math.floor((100 * n) / this.total)}% (${n}/${this.total})`;
    process.stderr.write(this.tty ? `\r${line}\x1b[K` : `${line}\n`);
    this.shown = true;
    this.timer = setTimeout(() => this.tick(), 1000);
    this.timer.unref();
  }
  done(): void {
    clearTimeout(this.timer);
    if (this.shown && this.tty) process.stderr.write('\r\x1b[K');
  }
}
