/**
 * Data generations and split-brain comparison, as pure logic (src/format/generation.ts): which
 * generation took over from which after which record, and which paths two sides of a divergence
 * both changed (a path, or a tree above it that one side renamed or removed whole).
 */
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import {
  firstGeneration, takeoverGeneration, takenOverAt, conflictingPaths, splitBrain, pathList, checkPathList, PATH_LIST_BYTES_MAX
} from '../src/format/generation'

const t = suite('generation')

t('a takeover continues its parent after `at`; the parent is an ancestor, not the other way', () => {
  const a = firstGeneration()
  const b = takeoverGeneration(a, 42)
  const c = takeoverGeneration(b, 50)
  assert.is(b.since, 42)
  assert.is(takenOverAt(b, a), 42)
  assert.is(takenOverAt(c, a), 42, 'an older ancestor keeps its end')
  assert.is(takenOverAt(c, b), 50)
  assert.is(takenOverAt(a, b), null)
  assert.is(takenOverAt(b, firstGeneration()), null, 'an unrelated generation')
})

t('conflicting paths: the same path on both sides, or a path under a tree the other side changed whole', () => {
  assert.equal(conflictingPaths([['/a', false], ['/b', false]], [['/b', false], ['/c', false]]), ['/b'])
  assert.equal(conflictingPaths([['/a', false]], [['/b', false]]), [])
  // A rename of /d (tree) on one side conflicts with any change below it on the other.
  assert.equal(conflictingPaths([['/d', true], ['/e', true]], [['/d/x', false], ['/dx', false]]), ['/d/x'])
  assert.equal(conflictingPaths([['/d/x', false]], [['/d', true]]), ['/d/x'], 'symmetric')
  assert.equal(conflictingPaths([['/', true]], [['/z', false]]), ['/z'], 'the root as a tree covers everything')
  assert.equal(conflictingPaths([], [['/z', false]]), [])
})

t('splitBrain: counts, and unknown when a side could not list its paths', () => {
  const sb = splitBrain(7, [['/a', false], ['/s', false]], [['/s', false]], 'peer')
  assert.equal([sb.at, sb.conflicting, sb.conflicts, sb.ours, sb.theirs], [7, ['/s'], 1, 2, 1])
  assert.is(splitBrain(7, null, [['/s', false]], 'p').conflicts, null, 'too many here: they may conflict')
  assert.is(splitBrain(7, null, [], 'p').conflicts, 0, 'nothing changed there: no conflict possible')
  assert.is(splitBrain(7, [], null, 'p').conflicts, 0)
  assert.is(splitBrain(7, null, null, 'p').conflicts, null)
})

t('path lists on the wire: capped by bytes, checked on arrival', () => {
  assert.equal(pathList(new Map([['/a', true]])), [['/a', true]])
  assert.is(pathList(null), null)
  const big = new Map<string, boolean>()
  for (let i = 0; big.size * 200 < PATH_LIST_BYTES_MAX + 1000; i++) big.set('/' + 'x'.repeat(190) + String(i), false)
  assert.is(pathList(big), null, 'too long to list')
  assert.equal(checkPathList([['/a', false]]), [['/a', false]])
  assert.is(checkPathList(null), null)
  assert.is(checkPathList([['/a']]), undefined)
  assert.is(checkPathList('x'), undefined)
})

t.run()
