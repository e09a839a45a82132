/**
 * test/programs.test.ts again with the Primary on the compat transport (`--fuse compat`: fuse-native,
 * libfuse 2), the fallback a kernel or platform the ll transport cannot serve gets (issue 14).
 */
process.env.REPLICAFS_TEST_PRIMARY_FUSE = 'compat'
require('./programs.test')
