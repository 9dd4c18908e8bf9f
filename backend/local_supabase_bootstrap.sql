-- Supabase-compatible bootstrap for PLAIN PostgreSQL (the embedded backend and the tests).
-- NEVER run this on a Supabase project: Supabase already has all of it.
--
-- It mirrors what a fresh Supabase database has before `supabase_schema.sql` is applied:
-- the API roles, their grants and default privileges in `public`, and an `auth` schema with
-- `auth.users` and the `auth.uid()/role()/email()/jwt()` helpers reading `request.jwt.claims`
-- exactly as Supabase's own definitions do. Idempotent: safe to run on every start.

-- Roles belong to the whole cluster, which other databases on it share (two test runs at once,
-- say): change them only when something is missing, and then one database at a time (a lock on
-- the shared catalog; advisory locks are per database). Concurrent ALTER ROLE / GRANT of the
-- same role otherwise fail with "tuple concurrently updated".
do $$
declare
  v_ready boolean;
begin
  v_ready := (
      select count(*) from pg_catalog.pg_roles
      where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')
    ) = 4
    and (
      select count(*) from pg_catalog.pg_roles
      where (rolname = 'anon' and rolconfig @> '{statement_timeout=3s}')
         or (rolname = 'authenticated' and rolconfig @> '{statement_timeout=8s}')
    ) = 2
    and (
      select count(distinct m.roleid) from pg_catalog.pg_auth_members as m
      join pg_catalog.pg_roles as granted on granted.oid = m.roleid
      join pg_catalog.pg_roles as member on member.oid = m.member
      where member.rolname = 'authenticator'
        and granted.rolname in ('anon', 'authenticated', 'service_role')
    ) = 3;
  if v_ready then
    return;
  end if;

  lock table pg_catalog.pg_authid in share row exclusive mode;
  if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin inherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin inherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
    create role service_role nologin inherit bypassrls;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  alter role anon set statement_timeout = '3s';
  alter role authenticated set statement_timeout = '8s';
  grant anon, authenticated, service_role to authenticator;
end
$$;

-- public: usable by the API roles, and (as on Supabase) everything new in it is granted to
-- them by default -- the schema file must revoke what it does not want exposed.
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;

-- extensions: where Supabase installs extensions (pgvector among them).
create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  phone text,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_anonymous boolean not null default false,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);
alter table auth.users enable row level security;

create or replace function auth.uid() returns uuid
language sql stable set search_path = ''
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable set search_path = ''
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() returns text
language sql stable set search_path = ''
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable set search_path = ''
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;
