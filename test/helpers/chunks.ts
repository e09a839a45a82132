/** Deterministic, self-identifying chunk contents shared by the crash workload and its checker. */
export function chunkBytes (file: number, index: number, size: number): Buffer {
  const buf = Buffer.alloc(size)
  for (let k = 0; k < size; k++) buf[k] = (file * 31 + index * 7 + k * 13 + 1) & 0xff
  const head = Buffer.from(`file ${file} chunk ${index}\n`)
  head.copy(buf, 0)
  return buf
}

export function chunkFileName (file: number): string {
  return `f${file}.dat`
}
