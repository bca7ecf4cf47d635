/**
 * The same database URL with `application_name` set, so each process's connections can be
 * told apart in pg_stat_activity (and --chaos terminates replica connections only).
 */
export function withApplicationName(databaseUrl: string, applicationName: string): string {
  const url = new URL(databaseUrl);
  url.searchParams.set('application_name', applicationName);
  return url.toString();
}
