export * from './constants.ts'
export * from './tables.ts'
export * from './db.ts'
export * from './api.ts'
