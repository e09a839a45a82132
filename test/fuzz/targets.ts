/** The fuzz targets by name (docs/FUZZING.md), and the boundary values of each one's lengths. */
import type { Target } from './engine'
import { wire, WIRE_U32S } from './wire'
import { record, RECORD_U32S } from './record'
import { control, CONTROL_U32S } from './control'

export const TARGETS: { [name: string]: Target } = { wire, record, control }

export const U32S: { [name: string]: number[] } = { wire: WIRE_U32S, record: RECORD_U32S, control: CONTROL_U32S }
