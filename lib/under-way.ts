/**
 * Calls still under way, so that a store's close() can wait for those that began before it:
 * an upload whose first step (a temporary file, a lease) was being taken when close() looked
 * at its uploads would otherwise be added after it, and left behind.
 */
export class UnderWay<T> {
  private readonly pending = new Set<Promise<T>>();

  /** Tracks `promise` until it settles; returns it. */
  add(promise: Promise<T>): Promise<T> {
    this.pending.add(promise);
    const settled = (): void => void this.pending.delete(promise);
    promise.then(settled, settled);
    return promise;
  }

  /** Resolves when every call tracked now has settled, whichever way. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }
}
