import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'

/** Percentage of all CPUs busy over `ms` while no benchmark process is working: other users of the machine. */
export async function otherCpuLoad(ms = 500): Promise<number> {
  const sample = () => cpus().reduce((acc, c) => ({ idle: acc.idle + c.times.idle, total: acc.total + c.times.user + c.times.nice + c.times.sys + c.times.irq + c.times.idle }), { idle: 0, total: 0 })
  const a = sample()
  await new Promise((resolve) => setTimeout(resolve, ms))
  const b = sample()
  const total = b.total - a.total
  return total <= 0 ? 0 : Math.round((100 * (total - (b.idle - a.idle))) / total)
}

/** CPU time a process has used so far, ms: its main thread (the event loop) and all its threads. */
export interface ProcessCpu {
  mainMs: number
  totalMs: number
}

// utime + stime of a /proc stat line, in clock ticks (fields 14 and 15, counted after the
// parenthesised command name, which may itself hold spaces).
function ticks(statLine: string): number {
  const fields = statLine.slice(statLine.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12])
}

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux for every architecture Node runs on). */
const TICK_MS = 10

/**
 * What `pid` has used of the CPU, from /proc (Linux); undefined elsewhere or once it has exited.
 * Its main thread's task has the process's own id.
 */
export function processCpu(pid: number | undefined): ProcessCpu | undefined {
  if (pid === undefined) return undefined
  try {
    return { mainMs: ticks(readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8')) * TICK_MS, totalMs: ticks(readFileSync(`/proc/${pid}/stat`, 'utf8')) * TICK_MS }
  } catch {
    return undefined
  }
}

/** CPU per response between two readings, µs: the event loop's and the whole process's. */
export interface CpuPerResponse {
  mainUs: number
  totalUs: number
}

export function cpuPerResponse(before: ProcessCpu | undefined, after: ProcessCpu | undefined, responses: number): CpuPerResponse | undefined {
  if (!before || !after || responses <= 0) return undefined
  return { mainUs: ((after.mainMs - before.mainMs) * 1000) / responses, totalUs: ((after.totalMs - before.totalMs) * 1000) / responses }
}
