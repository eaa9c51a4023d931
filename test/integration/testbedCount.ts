/**
 * COWSTACK_TESTBEDS: how many testbed clusters the integration run boots and uses at once
 * (default 2). Not 3 on a 2-core host: a third cluster adds no throughput. Measured 2026-12-02
 * (a full run stopped after its first files, 3 clusters of 3+3+2, 3+3 and 2+2 GiB nodes,
 * 18.7 GiB of 24 used at peak): the cores sat at 0% idle and the three longest files took
 * 1.5x their time in the last two-cluster full run on the same machine (crash 985 s against
 * 650, backup 1016 against 666, distribute 517 against 298), so three clusters finish no more
 * files per hour, and their bring-up took 307 s against 230.
 */
export function testbedCount(): number {
  const n = Number(process.env.COWSTACK_TESTBEDS ?? 2);
  if (!Number.isInteger(n) || n < 1 || n > 4)
    throw new Error(`COWSTACK_TESTBEDS must be 1..4 (got ${process.env.COWSTACK_TESTBEDS})`);
  return n;
}
