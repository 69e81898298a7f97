/**
 * The memory every S3 upload's part buffers share, like the READ chunk budget: an upload holds
 * at most `buffersPerUpload` parts (one filling while the others are sent), and all uploads of
 * a server together at most `bytes`. An upload that holds no buffer waits for one (in turn), which
 * stops reading its socket: backpressure, not memory. One that holds a buffer never waits for
 * a second (it reuses its first once sent), so uploads cannot deadlock on the budget.
 */

export const DEFAULT_PART_BUDGET_BYTES = 256 * 1024 * 1024;

export class PartBudget {
  readonly bytes: number;
  private used = 0;
  private readonly waiting: { size: number; resolve: () => void }[] = [];

  constructor(bytes = DEFAULT_PART_BUDGET_BYTES) {
    this.bytes = bytes;
  }

  /** Bytes held by uploads now. */
  get inUse(): number {
    return this.used;
  }

  /** Uploads waiting for their first buffer. */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * Takes `size` bytes if they fit now (or if nothing is held: a part larger than the whole
   * budget still gets to go alone). Never waits.
   */
  tryTake(size: number): boolean {
    if (this.waiting.length > 0 || !this.fits(size)) return false;
    this.used += size;
    return true;
  }

  /** Waits for `size` bytes, first come first served; `signal` gives up waiting. */
  take(size: number, signal?: AbortSignal): Promise<void> {
    if (this.tryTake(size)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const entry = {
        size,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const index = this.waiting.indexOf(entry);
        if (index >= 0) this.waiting.splice(index, 1);
        this.wake();
        reject(signal?.reason ?? new Error('aborted'));
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(entry);
    });
  }

  /** Gives `size` bytes back. */
  give(size: number): void {
    this.used = Math.max(0, this.used - size);
    this.wake();
  }

  private fits(size: number): boolean {
    return this.used === 0 || this.used + size <= this.bytes;
  }

  private wake(): void {
    while (this.waiting.length > 0 && this.fits(this.waiting[0].size)) {
      const next = this.waiting.shift()!;
      this.used += next.size;
      next.resolve();
    }
  }
}
