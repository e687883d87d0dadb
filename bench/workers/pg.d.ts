/** The part of `pg` scenario (a) uses (the package ships no types, and @types/pg is not a dependency). */
declare module 'pg' {
  export interface PoolConfig {
    connectionString?: string;
    max?: number;
  }
  export class Pool {
    constructor(config?: PoolConfig);
    query(text: string, values?: unknown[]): Promise<{ rows: any[]; rowCount: number | null }>;
    end(): Promise<void>;
  }
  const pg: { Pool: typeof Pool };
  export default pg;
}
