/**
 * Reproducible randomness for the soak and the live fuzz: everything random in a run comes from
 * one seed, one generator per client (`stream`), so a run can be replayed with `--seed`.
 */

/** splitmix32 finaliser: a well-mixed 32-bit value of a 32-bit input. */
export function mix32(x: number): number {
  let z = x | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** sfc32, seeded through splitmix32. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d = 1;

  constructor(seed: number, stream: number) {
    this.a = mix32(seed ^ 0x9e3779b9);
    this.b = mix32(stream + 0x7f4a7c15);
    this.c = mix32(this.a ^ this.b ^ 0x6a09e667);
    for (let i = 0; i < 16; i++) this.next();
  }

  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** 0 ≤ n < max (max ≤ 2^32). */
  int(max: number): number {
    return Math.floor((this.next() / 2 ** 32) * max);
  }

  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(n: number): Buffer {
    const words = new Uint32Array(Math.ceil(n / 4));
    for (let i = 0; i < words.length; i++) words[i] = this.next();
    return Buffer.from(words.buffer, 0, n);
  }
}
