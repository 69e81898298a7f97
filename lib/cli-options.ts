/**
 * Option parsers shared by the command-line entry points (commander's `argParser`).
 */
import { InvalidArgumentError } from 'commander';

/** A whole number in [min, max], written as plain digits. */
export function integer(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string): number => {
    if (!/^[0-9]+$/.test(value)) throw new InvalidArgumentError('not a whole number');
    const parsed = Number(value);
    if (parsed < min || parsed > max)
      throw new InvalidArgumentError(`must be from ${min} to ${max}`);
    return parsed;
  };
}
