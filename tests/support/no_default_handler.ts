// A module with no default export, for tests/workers.test.ts.
export const handler = (): void => {};
