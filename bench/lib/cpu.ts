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
