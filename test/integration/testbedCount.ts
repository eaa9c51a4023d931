/** COWSTACK_TESTBEDS: how many testbed clusters the integration run boots and uses at once (default 2). */
export function testbedCount(): number {
  const n = Number(process.env.COWSTACK_TESTBEDS ?? 2);
  if (!Number.isInteger(n) || n < 1 || n > 4)
    throw new Error(`COWSTACK_TESTBEDS must be 1..4 (got ${process.env.COWSTACK_TESTBEDS})`);
  return n;
}
