-- Memory service schema: one memory document per Supabase Auth user, protected by RLS.
--
-- Apply it in the Supabase SQL editor (or `supabase db push` / psql against the project).
-- Idempotent: applying it again changes nothing. Locally the app applies it itself, after
-- `local_supabase_bootstrap.sql` has made plain PostgreSQL look like a fresh Supabase database.
--
-- Every write that depends on the current content happens inside ONE function call below
-- (security invoker, so RLS applies to the calling user): two concurrent requests can never
-- lose each other's update.

-- ---------------------------------------------------------------------------------------
-- The table
-- ---------------------------------------------------------------------------------------
create table if not exists public.memories (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null unique references auth.users (id) on delete cascade,
  identity jsonb not null default '{}'::jsonb
    constraint memories_identity_is_object check (jsonb_typeof(identity) = 'object'),
  current_state jsonb not null default '{}'::jsonb
    constraint memories_current_state_is_object check (jsonb_typeof(current_state) = 'object'),
  long_term_summary jsonb not null default '{}'::jsonb
    constraint memories_long_term_summary_is_object check (jsonb_typeof(long_term_summary) = 'object'),
  core_instructions jsonb not null default '[]'::jsonb
    constraint memories_core_instructions_is_array check (jsonb_typeof(core_instructions) = 'array'),
  episodic_memory jsonb not null default '[]'::jsonb
    constraint memories_episodic_memory_is_array check (jsonb_typeof(episodic_memory) = 'array'),
  rewards jsonb not null default '[]'::jsonb
    constraint memories_rewards_is_array check (jsonb_typeof(rewards) = 'array'),
  parent_reports jsonb not null default '[]'::jsonb
    constraint memories_parent_reports_is_array check (jsonb_typeof(parent_reports) = 'array'),
  version bigint not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- A table made by the original plan (`create table memories …` without version, NOT NULLs,
-- CHECKs or the cascade) is brought up to this shape, keeping its rows. Nothing happens when the
-- table already has it.
do $$
declare
  v_field record;
  v_fkey text;
begin
  if not exists (
    select from pg_catalog.pg_attribute
    where attrelid = 'public.memories'::regclass and attname = 'version' and not attisdropped
  ) then
    alter table public.memories add column version bigint not null default 1;
  end if;
  if pg_catalog.pg_get_expr(
       (select d.adbin from pg_catalog.pg_attrdef as d
        join pg_catalog.pg_attribute as a on a.attrelid = d.adrelid and a.attnum = d.adnum
        where d.adrelid = 'public.memories'::regclass and a.attname = 'id'),
       'public.memories'::regclass) is distinct from 'gen_random_uuid()' then
    alter table public.memories
      alter column id set default gen_random_uuid(),
      alter column created_at set default now(),
      alter column updated_at set default now();
  end if;

  for v_field in
    select f.name, f.json_kind, f.empty
    from (values
      ('identity', 'object', '{}'), ('current_state', 'object', '{}'),
      ('long_term_summary', 'object', '{}'), ('core_instructions', 'array', '[]'),
      ('episodic_memory', 'array', '[]'), ('rewards', 'array', '[]'),
      ('parent_reports', 'array', '[]')
    ) as f(name, json_kind, empty)
  loop
    if exists (
      select from pg_catalog.pg_attribute
      where attrelid = 'public.memories'::regclass and attname = v_field.name
        and not attnotnull
    ) then
      execute format('update public.memories set %1$I = %2$L::jsonb where %1$I is null',
                     v_field.name, v_field.empty);
      execute format('alter table public.memories alter column %1$I set default %2$L::jsonb,'
                     ' alter column %1$I set not null', v_field.name, v_field.empty);
    end if;
    if not exists (
      select from pg_catalog.pg_constraint
      where conrelid = 'public.memories'::regclass
        and conname = format('memories_%s_is_%s', v_field.name, v_field.json_kind)
    ) then
      execute format('alter table public.memories add constraint %I check (jsonb_typeof(%I) = %L)',
                     format('memories_%s_is_%s', v_field.name, v_field.json_kind),
                     v_field.name, v_field.json_kind);
    end if;
  end loop;

  select conname into v_fkey from pg_catalog.pg_constraint
    where conrelid = 'public.memories'::regclass and contype = 'f'
      and confrelid = 'auth.users'::regclass and confdeltype <> 'c';
  if v_fkey is not null then
    execute format('alter table public.memories drop constraint %I,'
                   ' add constraint memories_user_id_fkey foreign key (user_id)'
                   ' references auth.users (id) on delete cascade', v_fkey);
  end if;
end
$$;

-- How the lists are stored. A list is one JSONB value that PostgreSQL fetches whole to read any
-- item of it and writes whole on every append. Compressed (the default, pglz), 500 episodes of
-- 1 KB take about 290 KB, and reading the newest 10 took 1.8 ms against 0.2 ms with 10 stored,
-- appending one 23 ms. Stored out of line uncompressed they take about 570 KB, and the same
-- read takes 0.3 ms, the append 6 ms. Values stored before keep their old form until they are
-- next written. (Objects are small, read whole, and keep the default.)
do $$
declare
  v_field text;
begin
  foreach v_field in array array['core_instructions', 'episodic_memory', 'rewards', 'parent_reports']
  loop
    if exists (
      select from pg_catalog.pg_attribute
      where attrelid = 'public.memories'::regclass and attname = v_field and attstorage <> 'e'
    ) then
      execute format('alter table public.memories alter column %I set storage external', v_field);
    end if;
  end loop;
end
$$;

comment on table public.memories is
  'One memory document per user (identity, state, summary, instructions, episodes, rewards, reports).';
comment on column public.memories.version is
  'Set on insert to the time in microseconds, bumped by one on every update (a trigger); the API serves it as the ETag.';

-- ---------------------------------------------------------------------------------------
-- version and updated_at move on every write, whoever writes.
-- A new row starts at the current time in microseconds since the epoch, not at 1: a row made
-- after an erase must never repeat a version of the erased row, or a client holding its old
-- ETag would overwrite the new data (ABA). A row sees fewer updates (each +1) than
-- microseconds pass, so a re-created row's versions are all above the erased row's.
-- Version 0 still means "no row" (If-Match "0").
-- ---------------------------------------------------------------------------------------
create or replace function public.memories_track_write()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    new.version := (extract(epoch from clock_timestamp()) * 1000000)::bigint;
    new.created_at := now();
    new.updated_at := clock_timestamp();
  else
    new.id := old.id;
    new.created_at := old.created_at;
    new.version := old.version + 1;
    new.updated_at := greatest(clock_timestamp(), old.updated_at + interval '1 microsecond');
  end if;
  return new;
end
$$;

create or replace trigger memories_track_write
  before insert or update on public.memories
  for each row execute function public.memories_track_write();

-- ---------------------------------------------------------------------------------------
-- Guardians (1 of 2): the links. A guardian is a Supabase Auth user linked by the operator to
-- one or more child users (never by the child or a stranger: anon and authenticated may only
-- read, and only their own links). Made with `make guardian GUARDIAN=<uuid> CHILD=<uuid>` or,
-- in the Supabase SQL editor (which runs as the table's owner):
--   insert into public.guardianships (guardian_id, child_id) values ('<parent uuid>', '<child uuid>');
--   delete from public.guardianships where guardian_id = '<parent uuid>' and child_id = '<child uuid>';
-- A removed link revokes the guardian's access at once: every policy and function below looks
-- the link up in the statement that uses it.
-- ---------------------------------------------------------------------------------------
create table if not exists public.guardianships (
  guardian_id uuid not null references auth.users (id) on delete cascade,
  child_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (guardian_id, child_id),
  constraint guardianships_not_self check (guardian_id <> child_id)
);
create index if not exists guardianships_child_id_idx on public.guardianships (child_id);
comment on table public.guardianships is
  'Guardian (parent) to child links, made by the operator only; a guardian owns the child''s core_instructions and parent_reports.';

alter table public.guardianships enable row level security;
drop policy if exists guardianships_select_own on public.guardianships;
create policy guardianships_select_own on public.guardianships
  for select to authenticated
  using ((select auth.uid()) = guardian_id or (select auth.uid()) = child_id);
revoke all on table public.guardianships from public, anon, authenticated;
grant select on table public.guardianships to authenticated;

-- Whether the caller is a guardian of p_child_id: the guardian arm of the memories policies.
-- plpgsql, so it is not inlined: the policies stay cheap to plan (the memory functions plan
-- their dynamic SQL on every call), and a user's own row never calls it (the first arm of the
-- policies' OR decides).
create or replace function public.memory_is_guardian_of(p_child_id uuid)
returns boolean
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  return exists (
    select from public.guardianships as g
    where g.guardian_id = (select auth.uid()) and g.child_id = p_child_id);
end
$$;
revoke all on function public.memory_is_guardian_of(uuid) from public, anon;
grant execute on function public.memory_is_guardian_of(uuid) to authenticated;

-- ---------------------------------------------------------------------------------------
-- Row level security: a signed-in user sees and changes only their own row (and a
-- guardian its children's rows, for the fields it owns: see Guardians 2 of 2); anon nothing.
-- ---------------------------------------------------------------------------------------
alter table public.memories enable row level security;

-- The original plan's policies (evaluated auth.uid() per row, applied to every role).
drop policy if exists "Users can view their own memories" on public.memories;
drop policy if exists "Users can update their own memories" on public.memories;
drop policy if exists "Users can insert their own memories" on public.memories;

drop policy if exists memories_select_own on public.memories;
create policy memories_select_own on public.memories
  for select to authenticated
  using ((select auth.uid()) = user_id
         or public.memory_is_guardian_of(user_id));

drop policy if exists memories_insert_own on public.memories;
create policy memories_insert_own on public.memories
  for insert to authenticated
  with check ((select auth.uid()) = user_id
              or public.memory_is_guardian_of(user_id));

drop policy if exists memories_update_own on public.memories;
create policy memories_update_own on public.memories
  for update to authenticated
  using ((select auth.uid()) = user_id
         or public.memory_is_guardian_of(user_id))
  with check ((select auth.uid()) = user_id
              or public.memory_is_guardian_of(user_id));

drop policy if exists memories_delete_own on public.memories;
create policy memories_delete_own on public.memories
  for delete to authenticated
  using ((select auth.uid()) = user_id
         or public.memory_is_guardian_of(user_id));

-- Supabase grants everything in public to anon and authenticated by default: take it back.
revoke all on table public.memories from public, anon, authenticated;
grant select, insert, update, delete on table public.memories to authenticated;

-- ---------------------------------------------------------------------------------------
-- The conversation log: every episode ever appended to episodic_memory, one row each, written
-- by the same function call as the append. episodic_memory is the window the prompt uses (capped
-- and compacted); the log loses nothing until the user forgets an episode (DELETE by id) or
-- erases the memory. `search` holds the episode's words (its string values; id, created_at and
-- role aside) in the text search configuration the service was configured with when it wrote
-- the row.
-- ---------------------------------------------------------------------------------------
create table if not exists public.memory_episodes (
  user_id uuid not null references auth.users (id) on delete cascade,
  id text not null,
  seq bigint generated always as identity,
  item jsonb not null constraint memory_episodes_item_is_object check (jsonb_typeof(item) = 'object'),
  search tsvector not null,
  primary key (user_id, id)
);
create index if not exists memory_episodes_search on public.memory_episodes using gin (search);
create index if not exists memory_episodes_user_seq on public.memory_episodes (user_id, seq);
comment on table public.memory_episodes is
  'Every episode of every conversation (episodic_memory is its recent window); searchable.';

alter table public.memory_episodes enable row level security;

drop policy if exists memory_episodes_select_own on public.memory_episodes;
create policy memory_episodes_select_own on public.memory_episodes
  for select to authenticated
  using ((select auth.uid()) = user_id
         or public.memory_is_guardian_of(user_id));

drop policy if exists memory_episodes_insert_own on public.memory_episodes;
create policy memory_episodes_insert_own on public.memory_episodes
  for insert to authenticated
  with check ((select auth.uid()) = user_id);

drop policy if exists memory_episodes_update_own on public.memory_episodes;
create policy memory_episodes_update_own on public.memory_episodes
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);

drop policy if exists memory_episodes_delete_own on public.memory_episodes;
create policy memory_episodes_delete_own on public.memory_episodes
  for delete to authenticated
  using ((select auth.uid()) = user_id
         or public.memory_is_guardian_of(user_id));

revoke all on table public.memory_episodes from public, anon, authenticated;
grant select, insert, update, delete on table public.memory_episodes to authenticated;

-- Embeddings of logged episodes, for hybrid search, where pgvector is installed (Supabase:
-- Database > Extensions > vector, in schema `extensions`). Without it the schema still applies
-- and search is full-text only. Searched by an exact scan of the user's own rows, never by a
-- shared approximate index that could return too few of them.
do $$
begin
  if not exists (select from pg_catalog.pg_extension where extname = 'vector')
     and exists (select from pg_catalog.pg_available_extensions where name = 'vector') then
    create schema if not exists extensions;
    create extension if not exists vector with schema extensions;
  end if;
  if exists (select from pg_catalog.pg_extension where extname = 'vector') then
    create table if not exists public.memory_episode_vectors (
      user_id uuid not null,
      id text not null,
      embedding extensions.vector not null,
      primary key (user_id, id),
      foreign key (user_id, id) references public.memory_episodes (user_id, id) on delete cascade
    );
    alter table public.memory_episode_vectors enable row level security;
    drop policy if exists memory_episode_vectors_own on public.memory_episode_vectors;
    create policy memory_episode_vectors_own on public.memory_episode_vectors
      for all to authenticated
      using ((select auth.uid()) = user_id)
      with check ((select auth.uid()) = user_id);
    revoke all on table public.memory_episode_vectors from public, anon, authenticated;
    grant select, insert, update, delete on table public.memory_episode_vectors to authenticated;
  end if;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------

-- The field catalogue: 'object' or 'list', null for anything else. Mirrors backend/models.py.
create or replace function public.memory_field_kind(p_field text)
returns text
language sql
immutable
security invoker
set search_path = ''
as $$
  select case p_field
    when 'identity' then 'object'
    when 'current_state' then 'object'
    when 'long_term_summary' then 'object'
    when 'core_instructions' then 'list'
    when 'episodic_memory' then 'list'
    when 'rewards' then 'list'
    when 'parent_reports' then 'list'
  end
$$;

-- The calling user, from the verified JWT PostgREST (or our repository) put in the transaction.
create or replace function public.memory_require_user()
returns uuid
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := auth.uid();
begin
  if v_uid is null then
    raise exception 'no signed-in user' using errcode = '42501';
  end if;
  return v_uid;
end
$$;

-- Refuses an unknown field, or one of another kind than p_kind ('object' or 'list').
create or replace function public.memory_require_field(p_field text, p_kind text)
returns void
language plpgsql
immutable
security invoker
set search_path = ''
as $$
declare
  v_kind text := public.memory_field_kind(p_field);
begin
  if v_kind is null then
    raise exception 'unknown memory field: %', p_field using errcode = '22023';
  end if;
  if p_kind is not null and v_kind <> p_kind then
    raise exception 'memory field % is not a % field', p_field, p_kind using errcode = '22023';
  end if;
end
$$;

-- A list item as stored: an object with a string `id` (a new uuid when absent) and a
-- `created_at` (now when absent).
create or replace function public.memory_normalize_item(p_item jsonb)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  if jsonb_typeof(p_item) is distinct from 'object' then
    raise exception 'list items must be JSON objects' using errcode = '22023';
  end if;
  if p_item -> 'id' is null or p_item -> 'id' = 'null'::jsonb then
    p_item := p_item || jsonb_build_object('id', gen_random_uuid());
  elsif jsonb_typeof(p_item -> 'id') <> 'string' or p_item ->> 'id' = '' then
    raise exception 'item id must be a non-empty string' using errcode = '22023';
  end if;
  if p_item -> 'created_at' is null or p_item -> 'created_at' = 'null'::jsonb then
    p_item := p_item || jsonb_build_object('created_at', now());
  end if;
  return p_item;
end
$$;

-- Store embeddings ({"<episode id>": [numbers], …}) of the calling user's logged episodes;
-- ids not in the log are skipped. Returns how many were stored. Needs pgvector (the table
-- exists only with it): the service sends embeddings only when it is configured for them.
create or replace function public.memory_save_embeddings(p_embeddings jsonb)
returns integer
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_count integer;
begin
  if jsonb_typeof(p_embeddings) is distinct from 'object' then
    raise exception 'embeddings are a JSON object of episode id to vector' using errcode = '22023';
  end if;
  insert into public.memory_episode_vectors as v (user_id, id, embedding)
  select v_uid, e.key, e.value::text::extensions.vector
    from jsonb_each(p_embeddings) as e
    join public.memory_episodes as l on l.user_id = v_uid and l.id = e.key
  on conflict (user_id, id) do update set embedding = excluded.embedding;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;

-- Log episodes (normalized episodic_memory items) in the conversation log, with the embeddings
-- given for them. An id logged before keeps its row, its content updated if it changed.
create or replace function public.memory_log_episodes(
  p_uid uuid,
  p_items jsonb,
  p_config text,
  p_embeddings jsonb default null
)
returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_config regconfig := coalesce(p_config, 'english')::regconfig;
begin
  insert into public.memory_episodes as l (user_id, id, item, search)
  select p_uid, e ->> 'id', e,
         jsonb_to_tsvector(v_config, e - 'id' - 'created_at' - 'role', '["string"]')
    from jsonb_array_elements(p_items) as e
  on conflict (user_id, id) do update set item = excluded.item, search = excluded.search
    where l.item is distinct from excluded.item;
  if p_embeddings is not null and p_embeddings <> '{}'::jsonb then
    perform public.memory_save_embeddings(p_embeddings);
  end if;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Writes. Each returns {"value"|"items": …, "version": n, "updated_at": t}.
-- p_expected_version (If-Match): null = unconditional; 0 = only if no row exists yet;
-- n = only if the row is at version n. A mismatch raises PT412 (PostgREST answers 412).
-- ---------------------------------------------------------------------------------------

-- Replace a field's whole value (list items are normalized: id and created_at).
-- On episodic_memory the log gains every item of the new window (a changed item is updated
-- there); items the window no longer holds stay in the log.
drop function if exists public.memory_set_field(text, jsonb, bigint);
create or replace function public.memory_set_field(
  p_field text,
  p_value jsonb,
  p_expected_version bigint default null,
  p_config text default 'english'
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_kind text := public.memory_field_kind(p_field);
  v_result jsonb;
begin
  perform public.memory_require_field(p_field, null);
  if v_kind = 'object' and jsonb_typeof(p_value) is distinct from 'object' then
    raise exception 'memory field % holds a JSON object', p_field using errcode = '22023';
  end if;
  if v_kind = 'list' then
    if jsonb_typeof(p_value) is distinct from 'array' then
      raise exception 'memory field % holds a JSON array', p_field using errcode = '22023';
    end if;
    select coalesce(jsonb_agg(public.memory_normalize_item(e) order by o), '[]'::jsonb)
      into p_value
      from jsonb_array_elements(p_value) with ordinality as t(e, o);
    -- Ids name items (remove by id, repeated appends): two items may not share one.
    if (select count(distinct e -> 'id') <> count(*) from jsonb_array_elements(p_value) as e) then
      raise exception 'item ids in memory field % must be unique', p_field using errcode = '22023';
    end if;
  end if;

  if p_expected_version is null or p_expected_version = 0 then
    execute format(
      'insert into public.memories as m (user_id, %1$I) values ($1, $2)
       on conflict (user_id) do update set %1$I = excluded.%1$I where $3 is null
       returning jsonb_build_object(''value'', m.%1$I, ''version'', m.version, ''updated_at'', m.updated_at)',
      p_field)
      into v_result using v_uid, p_value, p_expected_version;
  else
    execute format(
      'update public.memories as m set %1$I = $2 where m.user_id = $1 and m.version = $3
       returning jsonb_build_object(''value'', m.%1$I, ''version'', m.version, ''updated_at'', m.updated_at)',
      p_field)
      into v_result using v_uid, p_value, p_expected_version;
  end if;

  if v_result is null then
    raise exception 'memory is not at version %', p_expected_version using errcode = 'PT412';
  end if;
  if p_field = 'episodic_memory' then
    perform public.memory_log_episodes(v_uid, p_value, p_config);
  end if;
  return v_result;
end
$$;

-- Shallow-merge an object into an object field; a null value removes that key
-- (as in JSON Merge Patch, one level deep).
create or replace function public.memory_merge_field(
  p_field text,
  p_patch jsonb,
  p_expected_version bigint default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_removed text[];
  v_added jsonb;
  v_result jsonb;
begin
  perform public.memory_require_field(p_field, 'object');
  if jsonb_typeof(p_patch) is distinct from 'object' then
    raise exception 'a merge patch is a JSON object' using errcode = '22023';
  end if;
  select coalesce(array_agg(key), '{}') into v_removed
    from jsonb_each(p_patch) where value = 'null'::jsonb;
  v_added := p_patch - v_removed;

  if p_expected_version is null or p_expected_version = 0 then
    execute format(
      'insert into public.memories as m (user_id, %1$I) values ($1, $2)
       on conflict (user_id) do update set %1$I = (m.%1$I || $2) - $3 where $4 is null
       returning jsonb_build_object(''value'', m.%1$I, ''version'', m.version, ''updated_at'', m.updated_at)',
      p_field)
      into v_result using v_uid, v_added, v_removed, p_expected_version;
  else
    execute format(
      'update public.memories as m set %1$I = (m.%1$I || $2) - $3
       where m.user_id = $1 and m.version = $4
       returning jsonb_build_object(''value'', m.%1$I, ''version'', m.version, ''updated_at'', m.updated_at)',
      p_field)
      into v_result using v_uid, v_added, v_removed, p_expected_version;
  end if;

  if v_result is null then
    raise exception 'memory is not at version %', p_expected_version using errcode = 'PT412';
  end if;
  return v_result;
end
$$;

-- Append items to a list field, then keep only the newest p_cap (clamped to 1..10000).
-- An item whose id is already stored is not appended again: its stored copy is returned
-- (a retry is a no-op); the same id with other content raises PT409.
--
-- With p_idempotency_key (the client's Idempotency-Key, 1-255 characters) the request is all
-- or nothing. Items without an id get md5(uid/field/key/position)::uuid, and the "sentinel" is
-- that id for position n = the batch's length (stored only if a request with this key was
-- longer and its item n came without an id). None of the batch's ids stored and no sentinel:
-- appended as usual. All of them stored with the same content (created_at aside) and no
-- sentinel: a retry, the stored items are returned and nothing is written. Anything else (some
-- stored, the sentinel stored, other content) is the key reused with a different body: PT409,
-- nothing changes.
--
-- The previous version had no key parameter. CREATE OR REPLACE with another parameter list
-- would add a second overload, which PostgREST can not choose between (PGRST203): drop it.
-- Episodes appended to episodic_memory are logged by the same call (p_config: the text search
-- configuration; p_embeddings: {"<id>": vector} for items embedded already).
drop function if exists public.memory_append_items(text, jsonb, integer);
drop function if exists public.memory_append_items(text, jsonb, integer, text);

-- The newest p_cap items of a list (all of it when it is not longer). plpgsql, not SQL: an
-- inlined SQL function would evaluate its (list || new items) argument once per use.
create or replace function public.memory_keep_newest(p_list jsonb, p_cap integer)
returns jsonb
language plpgsql
immutable
security invoker
set search_path = ''
as $$
declare
  v_length integer := jsonb_array_length(p_list);
begin
  if v_length <= p_cap then
    return p_list;
  elsif v_length = p_cap + 1 then
    return p_list - 0;
  end if;
  return jsonb_path_query_array(
    p_list, '$[$from to last]', jsonb_build_object('from', v_length - p_cap));
end
$$;

create or replace function public.memory_append_items(
  p_field text,
  p_items jsonb,
  p_cap integer default 500,
  p_idempotency_key text default null,
  p_config text default 'english',
  p_embeddings jsonb default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_cap integer := least(greatest(coalesce(p_cap, 500), 1), 10000);
  v_keyed boolean := p_idempotency_key is not null;
  v_key_prefix text;
  v_sentinel jsonb;
  v_found integer := 0;
  v_row record;
  v_list jsonb;
  v_new jsonb := '[]'::jsonb;
  v_out jsonb := '[]'::jsonb;
  v_batch jsonb;
  v_conflict text;
  v_version bigint;
  v_updated_at timestamptz;
begin
  perform public.memory_require_field(p_field, 'list');
  if jsonb_typeof(p_items) is distinct from 'array' or jsonb_array_length(p_items) = 0 then
    raise exception 'items must be a non-empty JSON array' using errcode = '22023';
  end if;
  if v_keyed then
    if length(p_idempotency_key) not between 1 and 255 then
      raise exception 'an idempotency key has 1-255 characters' using errcode = '22023';
    end if;
    v_key_prefix := v_uid::text || '/' || p_field || '/' || p_idempotency_key || '/';
    select jsonb_agg(
             case when jsonb_typeof(e) = 'object' and coalesce(e -> 'id', 'null') = 'null'
                  then e || jsonb_build_object('id', md5(v_key_prefix || (o - 1))::uuid)
                  else e end
             order by o)
      into p_items
      from jsonb_array_elements(p_items) with ordinality as t(e, o);
    v_sentinel := jsonb_build_array(jsonb_build_object(
      'id', md5(v_key_prefix || jsonb_array_length(p_items))::uuid));
  end if;

  -- Fast path: no key and no client ids, so every id is new (gen_random_uuid) and nothing
  -- needs checking against the stored list: one upsert appends and trims under the row lock.
  if not v_keyed and not jsonb_path_exists(p_items, '$[*] ? (exists (@.id) && @.id != null)') then
    select jsonb_agg(public.memory_normalize_item(e) order by o) into v_new
      from jsonb_array_elements(p_items) with ordinality as t(e, o);
    execute format(
      'insert into public.memories as m (user_id, %1$I)
       values ($1, public.memory_keep_newest($2, $3))
       on conflict (user_id) do update set %1$I = public.memory_keep_newest(m.%1$I || $2, $3)
       returning m.version, m.updated_at', p_field)
      into v_version, v_updated_at using v_uid, v_new, v_cap;
    if p_field = 'episodic_memory' then
      perform public.memory_log_episodes(v_uid, v_new, p_config, p_embeddings);
    end if;
    return jsonb_build_object('items', v_new, 'version', v_version, 'updated_at', v_updated_at);
  end if;

  -- Lock this user's row (creating it first if needed): concurrent appends queue here.
  for attempt in 1..2 loop
    execute format(
      'select m.%1$I as list, m.version, m.updated_at from public.memories as m
       where m.user_id = $1 for update', p_field)
      into v_row using v_uid;
    exit when v_row.list is not null;
    insert into public.memories (user_id) values (v_uid) on conflict (user_id) do nothing;
  end loop;
  if v_row.list is null then  -- erased between our insert and our lock: let the client retry
    raise exception 'the memory was erased during this append; retry' using errcode = '40001';
  end if;
  v_list := v_row.list;

  if v_keyed and v_list @> v_sentinel then  -- a request with this key had more items
    raise exception 'this Idempotency-Key was used with a different body' using errcode = 'PT409';
  end if;

  -- Set-based (one pass, hash joins on id): each item of the batch is matched with the stored
  -- item of its id, else with the first item of the batch carrying it. Unmatched first
  -- occurrences are new; a match with other content (created_at aside) is a conflict; the
  -- answer holds each item as stored (the stored copy for ids that were there). The stored
  -- items of the batch's ids are picked by a path query, which reads each stored item's id
  -- in place: unpacking the list as rows took 0.6-1 ms at 500 episodes of 1 KB.
  select jsonb_agg(public.memory_normalize_item(e) order by o) into v_batch
    from jsonb_array_elements(p_items) with ordinality as t(e, o);
  with batch as (
    select t.e as item, t.e -> 'id' as id, t.o
      from jsonb_array_elements(v_batch) with ordinality as t(e, o)
  ), stored as (
    select e as item, e -> 'id' as id
      from jsonb_path_query(v_list, '$[*] ? (@.id == $ids[*])',
                            jsonb_build_object('ids', jsonb_path_query_array(v_batch, '$[*].id')))
           as e
  ), firsts as (
    select distinct on (id) id, item, o from batch order by id, o
  )
  select count(*) filter (where s.item is not null),
         (array_agg(b.item ->> 'id' order by b.o)
            filter (where (coalesce(s.item, f.item) - 'created_at') <> (b.item - 'created_at')))[1],
         coalesce(jsonb_agg(b.item order by b.o) filter (where s.item is null and f.o = b.o),
                  '[]'::jsonb),
         jsonb_agg(coalesce(s.item, f.item) order by b.o)
    into v_found, v_conflict, v_new, v_out
    from batch as b
    join firsts as f on f.id = b.id
    left join stored as s on s.id = b.id;
  if v_conflict is not null and v_keyed then
    raise exception 'this Idempotency-Key was used with a different body' using errcode = 'PT409';
  elsif v_conflict is not null then
    raise exception 'item % is already stored with other content', v_conflict
      using errcode = 'PT409';
  end if;

  -- With a key, all of the batch is stored already (a retry) or none of it (a first try).
  if v_keyed and v_found not in (0, jsonb_array_length(p_items)) then
    raise exception 'this Idempotency-Key was used with a different body' using errcode = 'PT409';
  end if;

  if jsonb_array_length(v_new) = 0 then
    v_version := v_row.version;
    v_updated_at := v_row.updated_at;
  else
    v_list := public.memory_keep_newest(v_list || v_new, v_cap);
    execute format(
      'update public.memories as m set %1$I = $2 where m.user_id = $1
       returning m.version, m.updated_at', p_field)
      into v_version, v_updated_at using v_uid, v_list;
    if p_field = 'episodic_memory' then
      perform public.memory_log_episodes(v_uid, v_new, p_config, p_embeddings);
    end if;
  end if;

  return jsonb_build_object('items', v_out, 'version', v_version, 'updated_at', v_updated_at);
end
$$;

-- Remove the item with this id from a list field. Returns null when there is no such item.
create or replace function public.memory_remove_item(p_field text, p_item_id text)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_result jsonb;
begin
  perform public.memory_require_field(p_field, 'list');
  execute format(
    'update public.memories as m
     set %1$I = m.%1$I - (select (t.o - 1)::integer
                          from jsonb_array_elements(m.%1$I) with ordinality as t(e, o)
                          where t.e -> ''id'' = to_jsonb($2) limit 1)
     where m.user_id = $1 and m.%1$I @> jsonb_build_array(jsonb_build_object(''id'', $2))
     returning jsonb_build_object(''version'', m.version, ''updated_at'', m.updated_at)',
    p_field)
    into v_result using v_uid, p_item_id;
  -- Forgetting an episode forgets it in the log too, also once compaction took it out of the
  -- window.
  if p_field = 'episodic_memory' then
    delete from public.memory_episodes as l where l.user_id = v_uid and l.id = p_item_id;
    if found and v_result is null then
      select jsonb_build_object('version', m.version, 'updated_at', m.updated_at) into v_result
        from public.memories as m where m.user_id = v_uid;
    end if;
  end if;
  return v_result;
end
$$;

-- Erase the calling user's whole memory, the conversation log included. Returns whether there
-- was anything.
create or replace function public.memory_erase()
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  return public.memory_erase_of(public.memory_require_user());
end
$$;

-- Erase one user's whole memory, the conversation log included: the caller's own, or (a
-- guardian) a child's. RLS decides which rows the caller may delete; the one erase path for
-- both (public.guardian_erase_child). Returns whether there was anything.
create or replace function public.memory_erase_of(p_user_id uuid)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_logged boolean;
begin
  perform public.memory_require_user();
  delete from public.memory_episodes where user_id = p_user_id;
  v_logged := found;
  delete from public.memories where user_id = p_user_id;
  return found or v_logged;
end
$$;

-- Compaction: remove exactly the items p_item_ids from a list field and shallow-merge
-- p_summary_patch into an object field (a null value removes that key), in one statement, and
-- only when every one of those items is still stored; otherwise change nothing and return
-- null (another compaction got there first, or the client removed one). Items appended
-- meanwhile are kept: the row is locked first, so the update sees every committed append.
-- Returns {"version": n, "updated_at": t}.
create or replace function public.memory_compact(
  p_field text,
  p_item_ids text[],
  p_summary_field text,
  p_summary_patch jsonb
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_probe jsonb;
  v_removed text[];
  v_added jsonb;
  v_result jsonb;
begin
  perform public.memory_require_field(p_field, 'list');
  perform public.memory_require_field(p_summary_field, 'object');
  if p_item_ids is null or cardinality(p_item_ids) = 0
     or array_position(p_item_ids, null) is not null then
    raise exception 'item ids must be a non-empty array of strings' using errcode = '22023';
  end if;
  if jsonb_typeof(p_summary_patch) is distinct from 'object' then
    raise exception 'a merge patch is a JSON object' using errcode = '22023';
  end if;
  select jsonb_agg(jsonb_build_object('id', i)) into v_probe from unnest(p_item_ids) as i;
  select coalesce(array_agg(key), '{}') into v_removed
    from jsonb_each(p_summary_patch) where value = 'null'::jsonb;
  v_added := p_summary_patch - v_removed;

  perform 1 from public.memories as m where m.user_id = v_uid for update;
  execute format(
    'update public.memories as m
     set %1$I = (select coalesce(jsonb_agg(t.e order by t.o), ''[]''::jsonb)
                 from jsonb_array_elements(m.%1$I) with ordinality as t(e, o)
                 where not coalesce(t.e ->> ''id'' = any ($2), false)),
         %2$I = (m.%2$I || $3) - $4
     where m.user_id = $1 and m.%1$I @> $5
     returning jsonb_build_object(''version'', m.version, ''updated_at'', m.updated_at)',
    p_field, p_summary_field)
    into v_result using v_uid, p_item_ids, v_added, v_removed, v_probe;
  return v_result;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Index lookups RLS would forbid. Under RLS the planner may use an operator as an index
-- condition only if it is leakproof, and full-text search's @@ is not: through RLS every
-- search would read the whole log table. memory_index.rank_text reads the table as its owner
-- (security definer) but only the rows of the calling user (auth.uid(), from the verified
-- claims; none without them), and answers ids and scores only; memory_search (security
-- invoker) then reads the episodes themselves under RLS. Like memory_private, this schema is
-- not an API schema (never expose it); signed-in users may only execute its one function.
-- ---------------------------------------------------------------------------------------
create schema if not exists memory_index;
comment on schema memory_index is
  'Index lookups for the calling user that RLS would turn into full scans. Never expose it in the API.';
revoke all on schema memory_index from public, anon, authenticated, service_role;
grant usage on schema memory_index to authenticated;

-- Full-text ranking of the caller's episodes: the question's words with OR semantics, ranked
-- like BM25: each word counts with its inverse document frequency among the user's episodes (a
-- word most episodes hold counts little) times ts_rank's saturating count of it in the episode.
-- Document frequencies are counted up to 500 (a word in more episodes weighs as if in 500: it
-- hardly counts either way), and candidates come from the GIN index by the rarest words first,
-- up to about 500 episodes (at most the newest 1000 holding the rarest word), so a question of
-- common words never ranks the whole log; common words still count in the score of every
-- candidate holding them. The best p_limit, ids in
-- p_exclude left out.
create or replace function memory_index.rank_text(
  p_query text,
  p_config text,
  p_limit integer,
  p_exclude text[]
)
returns table (id text, seq bigint, score double precision)
language plpgsql
stable
-- At most p_limit rows (50 by default for hybrid): the planner joins them to the episodes by
-- primary key, not by reading every episode of the user.
rows 50
security definer
set search_path = ''
-- Planned for each question (a plan cached while the log was small keeps scanning it whole).
set plan_cache_mode = force_custom_plan
as $$
declare
  c_max_df constant integer := 500;
  v_uid uuid := (select auth.uid());
  v_queries tsquery[];
  v_dfs bigint[];
  v_idfs double precision[];
  v_total bigint;
  v_probe tsquery;
  v_covered bigint;
begin
  if v_uid is null then
    raise exception 'a signed-in user is required' using errcode = '42501';
  end if;
  select array_agg(w.q order by f.df, w.q::text), array_agg(f.df order by f.df, w.q::text)
    into v_queries, v_dfs
    from (select distinct
                 ('''' || replace(replace(t.lexeme, '\', '\\'), '''', '''''') || '''')::tsquery
                   as q
            from unnest(to_tsvector(p_config::regconfig, p_query)) as t) as w
    cross join lateral (
      select count(*) as df from (
        select from public.memory_episodes as l
        where l.user_id = v_uid and l.search @@ w.q
        limit c_max_df) as matching) as f
    where f.df > 0;
  if v_queries is null then
    return;
  end if;

  -- The number of episodes, counted up to 10 times the frequency cap: enough to weigh a rare
  -- word against a common one, without counting a long log on every search.
  select count(*) into v_total
    from (select from public.memory_episodes as l where l.user_id = v_uid
          limit 10 * c_max_df) as counted;
  v_idfs := array(select ln(1 + (v_total - d + 0.5) / (d + 0.5)) from unnest(v_dfs) as d);
  v_probe := v_queries[1];
  v_covered := v_dfs[1];
  for i in 2 .. cardinality(v_queries) loop
    exit when v_covered + v_dfs[i] > c_max_df;
    v_probe := v_probe || v_queries[i];
    v_covered := v_covered + v_dfs[i];
  end loop;

  -- When even the rarest word is common, the newest of the episodes holding it are ranked.
  return query
    select c.id, c.seq, s.score
      from (select l.id, l.seq, l.search
              from public.memory_episodes as l
              where l.user_id = v_uid and l.search @@ v_probe
                and l.id <> all (coalesce(p_exclude, '{}'))
              order by l.seq desc
              limit 2 * c_max_df) as c
      cross join lateral (
        select sum(v_idfs[i] * ts_rank(c.search, v_queries[i])) as score
        from generate_subscripts(v_queries, 1) as i
        where c.search @@ v_queries[i]) as s
      order by s.score desc, c.seq desc
      limit p_limit;
end
$$;

revoke all on function memory_index.rank_text(text, text, integer, text[])
  from public, anon, authenticated, service_role;
grant execute on function memory_index.rank_text(text, text, integer, text[]) to authenticated;

-- ---------------------------------------------------------------------------------------
-- Reads. Each answers only what the request asks for, sliced in SQL: a bounded read costs what
-- it returns, not what is stored. PL/pgSQL (not SQL) so that their plans are cached per session.
-- ---------------------------------------------------------------------------------------

-- The items [p_from, p_to) of a JSON array (0-based, clamped), without unpacking the others.
create or replace function public.memory_slice(p_list jsonb, p_from integer, p_to integer)
returns jsonb
language plpgsql
immutable
security invoker
set search_path = ''
as $$
declare
  v_length integer := jsonb_array_length(p_list);
begin
  p_from := greatest(p_from, 0);
  p_to := least(p_to, v_length);
  if p_from = 0 and p_to = v_length then
    return p_list;
  elsif p_to <= p_from then
    return '[]'::jsonb;
  end if;
  return jsonb_path_query_array(
    p_list, '$[$from to $last]', jsonb_build_object('from', p_from, 'last', p_to - 1));
end
$$;

-- The newest p_count items of a list. Every look at a stored list (a function taking it as an
-- argument, a variable holding it) fetches the whole value again: with 500 episodes of 1 KB,
-- about 0.1 ms a look stored uncompressed, 1.2 ms compressed. This looks twice (the length,
-- the path query); memory_slice with its caller's length looks three times.
create or replace function public.memory_newest(p_list jsonb, p_count integer)
returns jsonb
language plpgsql
immutable
security invoker
set search_path = ''
as $$
declare
  v_length integer := jsonb_array_length(p_list);
begin
  if p_count >= v_length then
    return p_list;
  elsif p_count <= 0 then
    return '[]'::jsonb;
  end if;
  return jsonb_path_query_array(p_list, '$[last - $n + 1 to last]', jsonb_build_object('n', p_count));
end
$$;

-- The calling user's whole memory: the seven fields, version and updated_at; null when the user
-- has no row (a read creates nothing).
create or replace function public.memory_read_document()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  select jsonb_build_object(
           'identity', m.identity, 'current_state', m.current_state,
           'long_term_summary', m.long_term_summary, 'core_instructions', m.core_instructions,
           'episodic_memory', m.episodic_memory, 'rewards', m.rewards,
           'parent_reports', m.parent_reports, 'version', m.version, 'updated_at', m.updated_at)
    into v_result
    from public.memories as m
    where m.user_id = (select auth.uid());
  return v_result;
end
$$;

-- One field: {"value": …, "version": n} (the field's empty value and version 0 without a row).
-- List fields may be paged: p_before (an item id) keeps the items older than that item (PT404
-- when no item has that id), p_limit the newest p_limit of what is kept; both sliced here.
create or replace function public.memory_read_field(
  p_field text,
  p_limit integer default null,
  p_before text default null
)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_kind text := public.memory_field_kind(p_field);
  v_value jsonb;
  v_version bigint;
  v_end integer;
begin
  perform public.memory_require_field(p_field, null);
  if p_limit < 0 then
    raise exception 'limit must not be negative' using errcode = '22023';
  end if;
  select case p_field
           when 'identity' then m.identity
           when 'current_state' then m.current_state
           when 'long_term_summary' then m.long_term_summary
           when 'core_instructions' then m.core_instructions
           when 'episodic_memory' then m.episodic_memory
           when 'rewards' then m.rewards
           when 'parent_reports' then m.parent_reports
         end,
         m.version
    into v_value, v_version
    from public.memories as m
    where m.user_id = (select auth.uid());
  if v_value is null then
    v_value := case v_kind when 'object' then '{}'::jsonb else '[]'::jsonb end;
    v_version := 0;
  end if;
  if v_kind = 'list' and p_before is null and p_limit is not null then
    v_value := public.memory_newest(v_value, p_limit);
  elsif v_kind = 'list' and p_before is not null then
    -- The ids alone (not the items) are unpacked to find the position.
    select t.o - 1 into v_end
      from jsonb_array_elements_text(jsonb_path_query_array(v_value, '$[*].id'))
           with ordinality as t(id, o)
      where t.id = p_before
      limit 1;
    if v_end is null then
      raise exception 'no item % in %', p_before, p_field using errcode = 'PT404';
    end if;
    v_value := public.memory_slice(v_value, v_end - coalesce(p_limit, v_end), v_end);
  end if;
  return jsonb_build_object('value', v_value, 'version', v_version);
end
$$;

-- Search the calling user's conversation log (see memory_index.rank_text for the full-text
-- ranking). Hybrid (p_embedding, the question's embedding in pgvector's text form): also ranks
-- the user's vectors by cosine distance (an exact scan of this user's rows, never a shared
-- approximate index), and fuses both rankings by weighted reciprocal rank fusion:
--   score = 1 / (60 + text rank) + p_vector_weight / (60 + vector rank).
-- Items with ids in p_exclude are left out (chat excludes what its history window shows).
-- Returns {"mode": "text"|"hybrid", "results": [{"id", "created_at", "score", "episode"}]}.
create or replace function public.memory_search(
  p_query text,
  p_limit integer default 10,
  p_config text default 'english',
  p_embedding text default null,
  p_vector_weight double precision default 0.5,
  p_exclude text[] default null
)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_exclude text[] := coalesce(p_exclude, '{}');
  v_results jsonb;
begin
  if p_limit is null or p_limit not between 1 and 100 then
    raise exception 'limit must be between 1 and 100' using errcode = '22023';
  end if;
  if p_query is null or length(p_query) > 10000 then
    raise exception 'a query has at most 10000 characters' using errcode = '22023';
  end if;

  if p_embedding is null then
    select coalesce(jsonb_agg(jsonb_build_object(
             'id', l.id, 'created_at', l.item -> 'created_at', 'score', r.score, 'episode', l.item)
             order by r.score desc, r.seq desc), '[]')
      into v_results
      from memory_index.rank_text(p_query, coalesce(p_config, 'english'), p_limit, v_exclude) as r
      join public.memory_episodes as l on l.user_id = v_uid and l.id = r.id;
    return jsonb_build_object('mode', 'text', 'results', v_results);
  end if;

  with text_ranked as (
    select r.id, row_number() over (order by r.score desc, r.seq desc) as rank
      from memory_index.rank_text(
             p_query, coalesce(p_config, 'english'), greatest(p_limit, 50), v_exclude) as r
  ), vector_ranked as (
    select v.id,
           row_number() over (
             order by v.embedding operator(extensions.<=>) p_embedding::extensions.vector) as rank
      from public.memory_episode_vectors as v
      where v.user_id = v_uid and v.id <> all (v_exclude)
      order by v.embedding operator(extensions.<=>) p_embedding::extensions.vector
      limit greatest(p_limit, 50)
  ), fused as (
    select coalesce(t.id, v.id) as id,
           coalesce(1.0 / (60 + t.rank), 0)
             + p_vector_weight * coalesce(1.0 / (60 + v.rank), 0) as score
      from text_ranked as t full join vector_ranked as v on v.id = t.id
  )
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', r.id, 'created_at', r.item -> 'created_at', 'score', r.score, 'episode', r.item)
           order by r.score desc, r.seq desc), '[]')
    into v_results
    from (select f.id, f.score, l.item, l.seq
            from fused as f
            join public.memory_episodes as l on l.user_id = v_uid and l.id = f.id
            order by f.score desc, l.seq desc
            limit p_limit) as r;
  return jsonb_build_object('mode', 'hybrid', 'results', v_results);
end
$$;

-- What one chat turn's prompt uses, and nothing more: the object fields, the instructions, the
-- newest p_history episodic items, how many are stored (for compaction), the version, and the
-- items with the ids p_turn_ids that are stored (a keyed retry finds its own turn), and with
-- p_recall_k > 0 the p_recall_k episodes of the log that best match p_recall_query (see
-- memory_search) among those the history window does not show.
drop function if exists public.memory_chat_context(integer, text[]);
create or replace function public.memory_chat_context(
  p_history integer,
  p_turn_ids text[] default null,
  p_recall_query text default null,
  p_recall_k integer default 0,
  p_config text default 'english',
  p_embedding text default null,
  p_vector_weight double precision default 0.5
)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_row record;
  v_count integer;
  v_turn jsonb := '[]'::jsonb;
  v_recent jsonb;
  v_recalled jsonb := '[]'::jsonb;
begin
  if p_history is null or p_history < 0 then
    raise exception 'history must be a non-negative count' using errcode = '22023';
  end if;
  select m.identity, m.core_instructions, m.long_term_summary, m.current_state,
         m.episodic_memory, m.version
    into v_row
    from public.memories as m
    where m.user_id = (select auth.uid());
  if v_row.version is null then
    return jsonb_build_object('version', 0, 'recalled', v_recalled);
  end if;
  v_count := jsonb_array_length(v_row.episodic_memory);
  v_recent := public.memory_newest(v_row.episodic_memory, p_history);
  if coalesce(p_recall_k, 0) > 0 and coalesce(p_recall_query, '') <> '' then
    v_recalled := public.memory_search(
      p_recall_query, p_recall_k, p_config, p_embedding, p_vector_weight,
      array(select e ->> 'id' from jsonb_array_elements(v_recent) as e)) -> 'results';
  end if;
  if p_turn_ids is not null and cardinality(p_turn_ids) > 0 then
    v_turn := jsonb_path_query_array(
      v_row.episodic_memory, '$[*] ? (@.id == $ids[*])',
      jsonb_build_object('ids', to_jsonb(p_turn_ids)));
  end if;
  return jsonb_build_object(
    'identity', v_row.identity,
    'core_instructions', v_row.core_instructions,
    'long_term_summary', v_row.long_term_summary,
    'current_state', v_row.current_state,
    'recent_episodes', v_recent,
    'episode_count', v_count,
    'turn_episodes', v_turn,
    'recalled', v_recalled,
    'version', v_row.version);
end
$$;

-- ---------------------------------------------------------------------------------------
-- Guardians (2 of 2): field ownership, guardian operations, chat limits.
--
-- Ownership. core_instructions and parent_reports belong to the child's guardians while the
-- child has at least one: then only a guardian of the child, or the system (any role but
-- `authenticated`: the schema's owner, service_role), may change them. A child without a
-- guardian keeps writing its own, as before guardians existed. A guardian reaches a child's
-- row through the memories policies above and may change only those two fields there (and
-- delete the whole row: erase). A child with a guardian may not erase its row (that would
-- erase the guardian's fields too): its guardian does. The trigger below enforces it for every
-- path: our API, PostgREST straight to the table, and the functions.
-- ---------------------------------------------------------------------------------------
create or replace function public.memories_guard_fields()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_uid uuid;
  v_owned_changed boolean;
begin
  if current_user <> 'authenticated' then
    return coalesce(new, old);  -- the system: the owner (SQL editor, operator), service_role
  end if;
  v_uid := auth.uid();
  if tg_op = 'DELETE' then
    -- Erasing deletes the guardian's instructions and reports too: the guardian erases.
    if v_uid is not distinct from old.user_id
       and exists (select from public.guardianships as g where g.child_id = old.user_id) then
      raise exception 'your guardian erases this memory' using errcode = '42501';
    end if;
    return old;
  end if;
  if tg_op = 'INSERT' then
    v_owned_changed := new.core_instructions <> '[]'::jsonb or new.parent_reports <> '[]'::jsonb;
  else
    v_owned_changed := new.core_instructions is distinct from old.core_instructions
                       or new.parent_reports is distinct from old.parent_reports;
  end if;

  if v_uid is not distinct from new.user_id
     and (tg_op = 'INSERT' or v_uid is not distinct from old.user_id) then
    if v_owned_changed
       and exists (select from public.guardianships as g where g.child_id = new.user_id) then
      raise exception 'core_instructions and parent_reports are set by your guardian'
        using errcode = '42501',
              hint = 'A guardian changes them through /api/children/{id}/...';
    end if;
    return new;
  end if;

  -- Another user's row: only a guardian of that child gets here (the policies), and only to
  -- change the fields a guardian owns.
  if v_uid is null or not exists (
       select from public.guardianships as g
       where g.child_id = new.user_id and g.guardian_id = v_uid) then
    raise exception 'only a guardian of this user may change this memory' using errcode = '42501';
  end if;
  if (tg_op = 'UPDATE'
      and (new.user_id, new.identity, new.current_state, new.long_term_summary,
           new.episodic_memory, new.rewards)
          is distinct from
          (old.user_id, old.identity, old.current_state, old.long_term_summary,
           old.episodic_memory, old.rewards))
     or (tg_op = 'INSERT'
         and (new.identity <> '{}'::jsonb or new.current_state <> '{}'::jsonb
              or new.long_term_summary <> '{}'::jsonb or new.episodic_memory <> '[]'::jsonb
              or new.rewards <> '[]'::jsonb)) then
    raise exception 'a guardian may change only core_instructions and parent_reports'
      using errcode = '42501';
  end if;
  return new;
end
$$;

-- Fired only when it may have something to refuse, so the hot paths pay (almost) nothing: an
-- update only when it writes an owned field (a chat turn's append never does), an insert (every
-- upsert proposes one) only when it carries an owned field or is for another user's row.
create or replace trigger memories_guard_fields
  before update of core_instructions, parent_reports on public.memories
  for each row
  when (new.core_instructions is distinct from old.core_instructions
        or new.parent_reports is distinct from old.parent_reports)
  execute function public.memories_guard_fields();

create or replace trigger memories_guard_insert
  before insert on public.memories
  for each row
  when (new.core_instructions <> '[]'::jsonb or new.parent_reports <> '[]'::jsonb
        or auth.uid() is distinct from new.user_id)
  execute function public.memories_guard_fields();

create or replace trigger memories_guard_delete
  before delete on public.memories
  for each row execute function public.memories_guard_fields();

-- A write to any other column of another user's row (a guardian's, the only one the policies
-- let through) is refused; a user's own writes pass at the first test.
create or replace function public.memories_guard_child_fields()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if current_user = 'authenticated' and auth.uid() is distinct from old.user_id then
    raise exception 'a guardian may change only core_instructions and parent_reports'
      using errcode = '42501';
  end if;
  return new;
end
$$;

create or replace trigger memories_guard_child_fields
  before update of user_id, identity, current_state, long_term_summary, episodic_memory, rewards
  on public.memories
  for each row
  when (auth.uid() is distinct from old.user_id)
  execute function public.memories_guard_child_fields();

-- The caller, who must be a guardian of p_child_id (42501 otherwise, also for a link removed a
-- moment ago: the lookup runs in the calling statement).
create or replace function public.memory_require_guardian(p_child_id uuid)
returns uuid
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
begin
  if p_child_id is null or not exists (
       select from public.guardianships as g
       where g.guardian_id = v_uid and g.child_id = p_child_id) then
    raise exception 'you are not a guardian of this user' using errcode = '42501';
  end if;
  return v_uid;
end
$$;

-- Refuses a field a guardian does not own.
create or replace function public.memory_require_guardian_field(p_field text)
returns void
language plpgsql
immutable
security invoker
set search_path = ''
as $$
begin
  if p_field is null or p_field not in ('core_instructions', 'parent_reports') then
    raise exception 'a guardian writes only core_instructions and parent_reports'
      using errcode = '22023';
  end if;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Chat limits. A guardian sets a child's daily turn limit (chat_limits, written through the
-- policies: guardians of the child only). Turns are counted in chat_usage, one row per user:
-- the current UTC day's and minute's turns. The count is taken atomically by one upsert whose
-- condition is the limit (public.chat_take_turn), so concurrent turns on any number of workers
-- or instances never exceed it. A user may write its own usage row only as a counted turn
-- would (the trigger): counts never go down and never skip ahead.
-- ---------------------------------------------------------------------------------------
create table if not exists public.chat_limits (
  child_id uuid primary key references auth.users (id) on delete cascade,
  daily_turns integer
    constraint chat_limits_daily_turns_range check (daily_turns between 0 and 100000),
  updated_at timestamptz not null default now()
);
comment on table public.chat_limits is
  'Per-child chat limits set by a guardian (daily_turns null: no daily limit).';
alter table public.chat_limits enable row level security;

drop policy if exists chat_limits_select on public.chat_limits;
create policy chat_limits_select on public.chat_limits
  for select to authenticated
  using ((select auth.uid()) = child_id
         or child_id in (select g.child_id from public.guardianships as g
                         where g.guardian_id = (select auth.uid())));
drop policy if exists chat_limits_insert_guardian on public.chat_limits;
create policy chat_limits_insert_guardian on public.chat_limits
  for insert to authenticated
  with check (child_id in (select g.child_id from public.guardianships as g
                           where g.guardian_id = (select auth.uid())));
drop policy if exists chat_limits_update_guardian on public.chat_limits;
create policy chat_limits_update_guardian on public.chat_limits
  for update to authenticated
  using (child_id in (select g.child_id from public.guardianships as g
                      where g.guardian_id = (select auth.uid())))
  with check (child_id in (select g.child_id from public.guardianships as g
                           where g.guardian_id = (select auth.uid())));
revoke all on table public.chat_limits from public, anon, authenticated;
grant select, insert, update on table public.chat_limits to authenticated;

create table if not exists public.chat_usage (
  user_id uuid primary key references auth.users (id) on delete cascade,
  day_start date not null,
  day_turns integer not null constraint chat_usage_day_turns_positive check (day_turns >= 0),
  minute_start timestamptz not null,
  minute_turns integer not null
    constraint chat_usage_minute_turns_positive check (minute_turns >= 0)
);
comment on table public.chat_usage is
  'Chat turns counted per user: the current UTC day and minute (public.chat_take_turn).';
alter table public.chat_usage enable row level security;

drop policy if exists chat_usage_select_own on public.chat_usage;
create policy chat_usage_select_own on public.chat_usage
  for select to authenticated
  using ((select auth.uid()) = user_id);
drop policy if exists chat_usage_insert_own on public.chat_usage;
create policy chat_usage_insert_own on public.chat_usage
  for insert to authenticated
  with check ((select auth.uid()) = user_id);
drop policy if exists chat_usage_update_own on public.chat_usage;
create policy chat_usage_update_own on public.chat_usage
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);
revoke all on table public.chat_usage from public, anon, authenticated;
grant select, insert, update on table public.chat_usage to authenticated;

-- A signed-in user's write to its usage row must be exactly one counted turn now.
create or replace function public.chat_usage_count_only()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_day date := (now() at time zone 'UTC')::date;
  v_minute timestamptz := date_trunc('minute', now());
begin
  if current_user <> 'authenticated' then
    return new;  -- the system may correct counts
  end if;
  if new.day_start <> v_day or new.minute_start <> v_minute
     or (tg_op = 'INSERT' and (new.day_turns <> 1 or new.minute_turns <> 1))
     or (tg_op = 'UPDATE'
         and (new.user_id <> old.user_id
              or new.day_turns <> case when old.day_start = v_day
                                       then old.day_turns + 1 else 1 end
              or new.minute_turns <> case when old.minute_start = v_minute
                                          then old.minute_turns + 1 else 1 end)) then
    raise exception 'chat usage is counted one turn at a time' using errcode = '42501';
  end if;
  return new;
end
$$;

create or replace trigger chat_usage_count_only
  before insert or update on public.chat_usage
  for each row execute function public.chat_usage_count_only();

-- Count one chat turn of the calling user if its limits allow: the guardian's daily limit
-- (chat_limits) and p_turns_per_minute (null or 0: none). Null when counted; otherwise
-- {"refused": "daily" | "minute", "limit": n, "retry_after": seconds} and nothing changes.
create or replace function public.chat_take_turn(p_turns_per_minute integer default null)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_day date := (now() at time zone 'UTC')::date;
  v_minute timestamptz := date_trunc('minute', now());
  v_daily integer;
  v_per_minute integer := nullif(greatest(coalesce(p_turns_per_minute, 0), 0), 0);
  v_row record;
begin
  select l.daily_turns into v_daily from public.chat_limits as l where l.child_id = v_uid;
  if v_daily is null or v_daily > 0 then
    insert into public.chat_usage as u (user_id, day_start, day_turns, minute_start, minute_turns)
      values (v_uid, v_day, 1, v_minute, 1)
      on conflict (user_id) do update set
        day_start = excluded.day_start,
        day_turns = case when u.day_start = excluded.day_start then u.day_turns + 1 else 1 end,
        minute_start = excluded.minute_start,
        minute_turns = case when u.minute_start = excluded.minute_start
                            then u.minute_turns + 1 else 1 end
      where (u.day_start <> excluded.day_start or v_daily is null or u.day_turns < v_daily)
        and (u.minute_start <> excluded.minute_start or v_per_minute is null
             or u.minute_turns < v_per_minute);
    if found then
      return null;
    end if;
  end if;
  select u.day_start, u.day_turns into v_row from public.chat_usage as u where u.user_id = v_uid;
  if v_daily = 0 or (v_row.day_start = v_day and v_row.day_turns >= v_daily) then
    return jsonb_build_object(
      'refused', 'daily', 'limit', v_daily,
      'retry_after', greatest(1, ceil(extract(epoch from
        ((v_day + 1)::timestamp at time zone 'UTC') - now()))::integer));
  end if;
  return jsonb_build_object(
    'refused', 'minute', 'limit', v_per_minute,
    'retry_after', greatest(1, ceil(extract(epoch from
      v_minute + interval '1 minute' - now()))::integer));
end
$$;

-- A chat turn's start, in one call: its chat context (public.memory_chat_context) and, unless
-- the client's retry finds its turn already stored, one turn counted against the limits. A
-- refused turn answers {"refused", "limit", "retry_after"} and stores nothing.
drop function if exists public.chat_begin_turn(integer, text[], integer);
create or replace function public.chat_begin_turn(
  p_history integer,
  p_turn_ids text[] default null,
  p_turns_per_minute integer default null,
  p_recall_query text default null,
  p_recall_k integer default 0,
  p_config text default 'english',
  p_embedding text default null,
  p_vector_weight double precision default 0.5
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_context jsonb := public.memory_chat_context(
    p_history, p_turn_ids, p_recall_query, p_recall_k, p_config, p_embedding, p_vector_weight);
  v_refused jsonb;
begin
  if coalesce(jsonb_array_length(v_context -> 'turn_episodes'), 0) = 0 then
    v_refused := public.chat_take_turn(p_turns_per_minute);
    if v_refused is not null then
      return v_refused;
    end if;
  end if;
  return v_context;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Guardian operations. Each takes the child's id, runs as the guardian (security invoker),
-- checks the link first (42501 when there is none) and lets RLS and the trigger decide again.
-- ---------------------------------------------------------------------------------------

-- The caller's children: [{"child_id", "linked_at", "daily_turns"}], oldest link first.
create or replace function public.guardian_children()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
begin
  return coalesce((
    select jsonb_agg(jsonb_build_object(
             'child_id', g.child_id, 'linked_at', g.created_at, 'daily_turns', l.daily_turns)
           order by g.created_at, g.child_id)
    from public.guardianships as g
    left join public.chat_limits as l on l.child_id = g.child_id
    where g.guardian_id = v_uid), '[]'::jsonb);
end
$$;

-- A child's whole memory, as memory_read_document answers the child (null: no row).
create or replace function public.guardian_read_document(p_child_id uuid)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  perform public.memory_require_guardian(p_child_id);
  select jsonb_build_object(
           'identity', m.identity, 'current_state', m.current_state,
           'long_term_summary', m.long_term_summary, 'core_instructions', m.core_instructions,
           'episodic_memory', m.episodic_memory, 'rewards', m.rewards,
           'parent_reports', m.parent_reports, 'version', m.version, 'updated_at', m.updated_at)
    into v_result
    from public.memories as m
    where m.user_id = p_child_id;
  return v_result;
end
$$;

-- Replace a guardian-owned list field of a child (items normalized as memory_set_field does).
create or replace function public.guardian_set_field(
  p_child_id uuid,
  p_field text,
  p_value jsonb
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  perform public.memory_require_guardian(p_child_id);
  perform public.memory_require_guardian_field(p_field);
  if jsonb_typeof(p_value) is distinct from 'array' then
    raise exception 'memory field % holds a JSON array', p_field using errcode = '22023';
  end if;
  select coalesce(jsonb_agg(public.memory_normalize_item(e) order by o), '[]'::jsonb)
    into p_value
    from jsonb_array_elements(p_value) with ordinality as t(e, o);
  if (select count(distinct e -> 'id') <> count(*) from jsonb_array_elements(p_value) as e) then
    raise exception 'item ids in memory field % must be unique', p_field using errcode = '22023';
  end if;
  execute format(
    'insert into public.memories as m (user_id, %1$I) values ($1, $2)
     on conflict (user_id) do update set %1$I = excluded.%1$I
     returning jsonb_build_object(''value'', m.%1$I, ''version'', m.version, ''updated_at'', m.updated_at)',
    p_field)
    into v_result using p_child_id, p_value;
  return v_result;
end
$$;

-- Append items to a guardian-owned list field of a child, keeping the newest p_cap.
create or replace function public.guardian_append_items(
  p_child_id uuid,
  p_field text,
  p_items jsonb,
  p_cap integer default 500
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_cap integer := least(greatest(coalesce(p_cap, 500), 1), 10000);
  v_new jsonb;
  v_version bigint;
  v_updated_at timestamptz;
begin
  perform public.memory_require_guardian(p_child_id);
  perform public.memory_require_guardian_field(p_field);
  if jsonb_typeof(p_items) is distinct from 'array' or jsonb_array_length(p_items) = 0 then
    raise exception 'items must be a non-empty JSON array' using errcode = '22023';
  end if;
  -- Every item gets a new id: a guardian's item never collides with one stored.
  select jsonb_agg(public.memory_normalize_item(e - 'id') order by o) into v_new
    from jsonb_array_elements(p_items) with ordinality as t(e, o);
  execute format(
    'insert into public.memories as m (user_id, %1$I)
     values ($1, public.memory_keep_newest($2, $3))
     on conflict (user_id) do update set %1$I = public.memory_keep_newest(m.%1$I || $2, $3)
     returning m.version, m.updated_at', p_field)
    into v_version, v_updated_at using p_child_id, v_new, v_cap;
  return jsonb_build_object('items', v_new, 'version', v_version, 'updated_at', v_updated_at);
end
$$;

-- Remove one item from a guardian-owned list field of a child; null when there is no such item.
create or replace function public.guardian_remove_item(
  p_child_id uuid,
  p_field text,
  p_item_id text
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  perform public.memory_require_guardian(p_child_id);
  perform public.memory_require_guardian_field(p_field);
  execute format(
    'update public.memories as m
     set %1$I = m.%1$I - (select (t.o - 1)::integer
                          from jsonb_array_elements(m.%1$I) with ordinality as t(e, o)
                          where t.e -> ''id'' = to_jsonb($2) limit 1)
     where m.user_id = $1 and m.%1$I @> jsonb_build_array(jsonb_build_object(''id'', $2))
     returning jsonb_build_object(''version'', m.version, ''updated_at'', m.updated_at)',
    p_field)
    into v_result using p_child_id, p_item_id;
  return v_result;
end
$$;

-- The id of the last episode the newest report covers (its `through_episode_id`), or null.
create or replace function public.memory_last_reported_episode(p_reports jsonb)
returns text
language sql
immutable
security invoker
set search_path = ''
as $$
  select t.e ->> 'through_episode_id'
  from jsonb_array_elements(p_reports) with ordinality as t(e, o)
  where jsonb_typeof(t.e -> 'through_episode_id') = 'string'
  order by t.o desc
  limit 1
$$;

-- What a report on a child needs: the episodes after the one the newest report covers (the
-- whole episodic window when that one is gone or there is no report; the newest p_max_episodes
-- of them), the newest report's episode id and time, and the newest 50 rewards.
create or replace function public.guardian_report_context(
  p_child_id uuid,
  p_max_episodes integer default 200
)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_row record;
  v_after text;
  v_count integer;
  v_from integer := 0;
begin
  perform public.memory_require_guardian(p_child_id);
  select m.episodic_memory, m.parent_reports, m.rewards, m.version into v_row
    from public.memories as m where m.user_id = p_child_id;
  if v_row.version is null then
    return jsonb_build_object('episodes', '[]'::jsonb, 'after_episode_id', null,
                              'last_report_at', null, 'rewards', '[]'::jsonb, 'version', 0);
  end if;
  v_after := public.memory_last_reported_episode(v_row.parent_reports);
  v_count := jsonb_array_length(v_row.episodic_memory);
  if v_after is not null then
    select t.o into v_from
      from jsonb_array_elements_text(jsonb_path_query_array(v_row.episodic_memory, '$[*].id'))
           with ordinality as t(id, o)
      where t.id = v_after
      limit 1;
    v_from := coalesce(v_from, 0);
  end if;
  v_from := greatest(v_from, v_count - greatest(coalesce(p_max_episodes, 200), 1));
  return jsonb_build_object(
    'episodes', public.memory_slice(v_row.episodic_memory, v_from, v_count),
    'after_episode_id', v_after,
    'last_report_at', (select t.e ->> 'created_at'
                       from jsonb_array_elements(v_row.parent_reports) with ordinality as t(e, o)
                       where t.e ->> 'through_episode_id' = v_after
                       order by t.o desc limit 1),
    'rewards', public.memory_slice(v_row.rewards, jsonb_array_length(v_row.rewards) - 50,
                                   jsonb_array_length(v_row.rewards)),
    'version', v_row.version);
end
$$;

-- Store a report on a child, only if the newest stored report still covers up to
-- p_after_episode_id (what the report's generation read): two generations racing store one.
-- Returns {"items": [report], "version", "updated_at"}, or null when another report got there
-- first (or the memory was erased).
create or replace function public.guardian_store_report(
  p_child_id uuid,
  p_report jsonb,
  p_after_episode_id text,
  p_cap integer default 500
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_cap integer := least(greatest(coalesce(p_cap, 500), 1), 10000);
  v_reports jsonb;
  v_item jsonb;
  v_version bigint;
  v_updated_at timestamptz;
begin
  perform public.memory_require_guardian(p_child_id);
  if jsonb_typeof(p_report -> 'through_episode_id') is distinct from 'string' then
    raise exception 'a report names the last episode it covers (through_episode_id)'
      using errcode = '22023';
  end if;
  -- The lock makes a racing generation wait here, then see this one's report.
  select m.parent_reports into v_reports
    from public.memories as m where m.user_id = p_child_id for update;
  if v_reports is null
     or public.memory_last_reported_episode(v_reports) is distinct from p_after_episode_id then
    return null;
  end if;
  v_item := public.memory_normalize_item(p_report - 'id');
  update public.memories as m
    set parent_reports = public.memory_keep_newest(m.parent_reports || jsonb_build_array(v_item), v_cap)
    where m.user_id = p_child_id
    returning m.version, m.updated_at into v_version, v_updated_at;
  return jsonb_build_object('items', jsonb_build_array(v_item), 'version', v_version,
                            'updated_at', v_updated_at);
end
$$;

-- Set a child's daily chat turn limit (null: none). Returns {"child_id", "daily_turns"}.
create or replace function public.guardian_set_chat_limit(p_child_id uuid, p_daily_turns integer)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_result jsonb;
begin
  perform public.memory_require_guardian(p_child_id);
  insert into public.chat_limits as l (child_id, daily_turns) values (p_child_id, p_daily_turns)
    on conflict (child_id) do update set daily_turns = excluded.daily_turns, updated_at = now()
    returning jsonb_build_object('child_id', l.child_id, 'daily_turns', l.daily_turns)
    into v_result;
  return v_result;
end
$$;

-- Erase a child's whole memory, through the same path as the child's own erase.
create or replace function public.guardian_erase_child(p_child_id uuid)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform public.memory_require_guardian(p_child_id);
  return public.memory_erase_of(p_child_id);
end
$$;

revoke all on function public.memories_guard_fields() from public, anon, authenticated;
revoke all on function public.memories_guard_child_fields() from public, anon, authenticated;
revoke all on function public.chat_usage_count_only() from public, anon, authenticated;
revoke all on function public.memory_erase_of(uuid) from public, anon;
revoke all on function public.memory_require_guardian(uuid) from public, anon;
revoke all on function public.memory_require_guardian_field(text) from public, anon;
revoke all on function public.chat_take_turn(integer) from public, anon;
revoke all on function public.chat_begin_turn(integer, text[], integer, text, integer, text, text, double precision) from public, anon;
revoke all on function public.guardian_children() from public, anon;
revoke all on function public.guardian_read_document(uuid) from public, anon;
revoke all on function public.guardian_set_field(uuid, text, jsonb) from public, anon;
revoke all on function public.guardian_append_items(uuid, text, jsonb, integer) from public, anon;
revoke all on function public.guardian_remove_item(uuid, text, text) from public, anon;
revoke all on function public.memory_last_reported_episode(jsonb) from public, anon;
revoke all on function public.guardian_report_context(uuid, integer) from public, anon;
revoke all on function public.guardian_store_report(uuid, jsonb, text, integer) from public, anon;
revoke all on function public.guardian_set_chat_limit(uuid, integer) from public, anon;
revoke all on function public.guardian_erase_child(uuid) from public, anon;

grant execute on function public.memory_erase_of(uuid) to authenticated;
grant execute on function public.memory_require_guardian(uuid) to authenticated;
grant execute on function public.memory_require_guardian_field(text) to authenticated;
grant execute on function public.chat_take_turn(integer) to authenticated;
grant execute on function public.chat_begin_turn(integer, text[], integer, text, integer, text, text, double precision) to authenticated;
grant execute on function public.guardian_children() to authenticated;
grant execute on function public.guardian_read_document(uuid) to authenticated;
grant execute on function public.guardian_set_field(uuid, text, jsonb) to authenticated;
grant execute on function public.guardian_append_items(uuid, text, jsonb, integer) to authenticated;
grant execute on function public.guardian_remove_item(uuid, text, text) to authenticated;
grant execute on function public.memory_last_reported_episode(jsonb) to authenticated;
grant execute on function public.guardian_report_context(uuid, integer) to authenticated;
grant execute on function public.guardian_store_report(uuid, jsonb, text, integer) to authenticated;
grant execute on function public.guardian_set_chat_limit(uuid, integer) to authenticated;
grant execute on function public.guardian_erase_child(uuid) to authenticated;

-- ---------------------------------------------------------------------------------------
-- Function privileges: signed-in users only (PostgreSQL grants EXECUTE to PUBLIC, and
-- Supabase to anon, by default).
-- ---------------------------------------------------------------------------------------
revoke all on function public.memories_track_write() from public, anon, authenticated;
revoke all on function public.memory_field_kind(text) from public, anon;
revoke all on function public.memory_require_user() from public, anon;
revoke all on function public.memory_require_field(text, text) from public, anon;
revoke all on function public.memory_normalize_item(jsonb) from public, anon;
revoke all on function public.memory_keep_newest(jsonb, integer) from public, anon;
revoke all on function public.memory_set_field(text, jsonb, bigint, text) from public, anon;
revoke all on function public.memory_merge_field(text, jsonb, bigint) from public, anon;
revoke all on function public.memory_append_items(text, jsonb, integer, text, text, jsonb) from public, anon;
revoke all on function public.memory_remove_item(text, text) from public, anon;
revoke all on function public.memory_erase() from public, anon;
revoke all on function public.memory_compact(text, text[], text, jsonb) from public, anon;
revoke all on function public.memory_slice(jsonb, integer, integer) from public, anon;
revoke all on function public.memory_newest(jsonb, integer) from public, anon;
revoke all on function public.memory_read_document() from public, anon;
revoke all on function public.memory_save_embeddings(jsonb) from public, anon;
revoke all on function public.memory_log_episodes(uuid, jsonb, text, jsonb) from public, anon;
revoke all on function public.memory_search(text, integer, text, text, double precision, text[]) from public, anon;
revoke all on function public.memory_read_field(text, integer, text) from public, anon;
revoke all on function public.memory_chat_context(integer, text[], text, integer, text, text, double precision) from public, anon;

grant execute on function public.memory_field_kind(text) to authenticated;
grant execute on function public.memory_require_user() to authenticated;
grant execute on function public.memory_require_field(text, text) to authenticated;
grant execute on function public.memory_normalize_item(jsonb) to authenticated;
grant execute on function public.memory_keep_newest(jsonb, integer) to authenticated;
grant execute on function public.memory_set_field(text, jsonb, bigint, text) to authenticated;
grant execute on function public.memory_merge_field(text, jsonb, bigint) to authenticated;
grant execute on function public.memory_append_items(text, jsonb, integer, text, text, jsonb) to authenticated;
grant execute on function public.memory_remove_item(text, text) to authenticated;
grant execute on function public.memory_erase() to authenticated;
grant execute on function public.memory_compact(text, text[], text, jsonb) to authenticated;
grant execute on function public.memory_slice(jsonb, integer, integer) to authenticated;
grant execute on function public.memory_newest(jsonb, integer) to authenticated;
grant execute on function public.memory_read_document() to authenticated;
grant execute on function public.memory_save_embeddings(jsonb) to authenticated;
grant execute on function public.memory_log_episodes(uuid, jsonb, text, jsonb) to authenticated;
grant execute on function public.memory_search(text, integer, text, text, double precision, text[]) to authenticated;
grant execute on function public.memory_read_field(text, integer, text) to authenticated;
grant execute on function public.memory_chat_context(integer, text[], text, integer, text, text, double precision) to authenticated;

-- ---------------------------------------------------------------------------------------
-- Import and export (the old one-file-per-field layout; services/migration/)
--
-- memory_import_document applies a whole imported document of the calling user in ONE
-- statement, through the same write functions as the API (so caps, versions and whatever those
-- functions also write apply), all or nothing. It is idempotent:
--   * object fields are set (memory_set_field) only when the stored value differs;
--   * list fields: p_document's items carry deterministic ids (the importer derives them from
--     the source). The newest source item already stored marks how far an earlier import got:
--     the items after it are appended (memory_append_items, in chunks of p_chunk), the ones up
--     to it are not sent again (they were imported before, then perhaps trimmed by the cap or
--     removed by the user). A source item stored with other content (created_at aside) is a
--     conflict (PT409): nothing changes.
-- Fields absent from p_document are left as they are. p_dry_run computes the same answer and
-- writes nothing. Returns {"changed": bool, "version": n, "fields": {field: {"action":
-- "set"|"append"|"unchanged", "items": appended, "stored": already there, "over_cap": items the
-- cap keeps out of the field after this import}}}.
-- ---------------------------------------------------------------------------------------
-- conversation_log (the full log an export holds) is applied first: its items go into the log
-- only (ids logged already are left as they are), in their order. For episodic_memory, a source
-- item that was logged before this call also counts as imported before, so a re-run after the
-- window moved on appends nothing again.
drop function if exists public.memory_import_document(jsonb, jsonb, boolean, integer);
create or replace function public.memory_import_document(
  p_document jsonb,
  p_caps jsonb default '{}'::jsonb,
  p_dry_run boolean default false,
  p_chunk integer default 50,
  p_config text default 'english'
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_uid uuid := public.memory_require_user();
  v_row jsonb;
  v_field text;
  v_value jsonb;
  v_kind text;
  v_stored jsonb;
  v_cap integer;
  v_mark bigint;
  v_conflict text;
  v_new jsonb;
  v_count integer;
  v_from integer;
  v_chunk integer := least(greatest(coalesce(p_chunk, 50), 1), 1000);
  v_fields jsonb := '{}'::jsonb;
  v_changed boolean := false;
  v_result jsonb;
  v_log_mark bigint := 0;
begin
  if jsonb_typeof(p_document) is distinct from 'object' then
    raise exception 'an imported document is a JSON object of fields' using errcode = '22023';
  end if;
  if jsonb_typeof(p_document -> 'episodic_memory') = 'array' then
    select coalesce(max(s.o), 0) into v_log_mark
      from jsonb_array_elements(p_document -> 'episodic_memory') with ordinality as s(e, o)
      join public.memory_episodes as l on l.user_id = v_uid and l.id = s.e ->> 'id';
  end if;
  if p_dry_run then
    select to_jsonb(m) into v_row from public.memories as m where m.user_id = v_uid;
  else
    select to_jsonb(m) into v_row from public.memories as m where m.user_id = v_uid for update;
  end if;

  for v_field, v_value in
    select key, value from jsonb_each(p_document) order by key = 'conversation_log' desc, key
  loop
    if v_field = 'conversation_log' then
      if jsonb_typeof(v_value) is distinct from 'array'
         or jsonb_path_exists(v_value, '$[*] ? (@.type() != "object" || !exists(@.id) || @.id.type() != "string")') then
        raise exception 'imported conversation_log items must be objects with string ids'
          using errcode = '22023';
      end if;
      if p_dry_run then
        select count(*) into v_count from jsonb_array_elements(v_value) as e
          where not exists (select from public.memory_episodes as l
                            where l.user_id = v_uid and l.id = e ->> 'id');
      else
        insert into public.memory_episodes (user_id, id, item, search)
        select v_uid, n.item ->> 'id', n.item,
               jsonb_to_tsvector(coalesce(p_config, 'english')::regconfig,
                                 n.item - 'id' - 'created_at' - 'role', '["string"]')
          from jsonb_array_elements(v_value) with ordinality as t(e, o)
          cross join lateral (select public.memory_normalize_item(t.e) as item) as n
          order by t.o
        on conflict (user_id, id) do nothing;
        get diagnostics v_count = row_count;
      end if;
      v_changed := v_changed or v_count > 0;
      v_fields := v_fields || jsonb_build_object(v_field, jsonb_build_object(
        'action', case when v_count > 0 then 'append' else 'unchanged' end,
        'items', v_count, 'stored', jsonb_array_length(v_value) - v_count, 'over_cap', 0));
      continue;
    end if;
    perform public.memory_require_field(v_field, null);
    v_kind := public.memory_field_kind(v_field);
    v_stored := v_row -> v_field;
    if v_kind = 'object' then
      if v_stored is not distinct from v_value
         or (v_stored is null and v_value = '{}'::jsonb) then
        v_fields := v_fields || jsonb_build_object(v_field, jsonb_build_object('action', 'unchanged'));
      else
        if not p_dry_run then
          v_result := public.memory_set_field(v_field, v_value, null, p_config);
        end if;
        v_changed := true;
        v_fields := v_fields || jsonb_build_object(v_field, jsonb_build_object('action', 'set'));
      end if;
      continue;
    end if;

    if jsonb_typeof(v_value) is distinct from 'array'
       or jsonb_path_exists(v_value, '$[*] ? (@.type() != "object" || !exists(@.id) || @.id.type() != "string")') then
      raise exception 'imported % items must be objects with string ids', v_field
        using errcode = '22023';
    end if;
    v_stored := coalesce(v_stored, '[]'::jsonb);
    v_cap := least(greatest(coalesce((p_caps ->> v_field)::integer, 500), 1), 10000);
    -- Source items already stored (matched by id, a hash join): the newest marks the progress.
    select max(s.o), min(case when (s.e - 'created_at') <> (t.e - 'created_at') then s.e ->> 'id' end)
      into v_mark, v_conflict
      from jsonb_array_elements(v_value) with ordinality as s(e, o)
      join jsonb_array_elements(v_stored) as t(e) on t.e -> 'id' = s.e -> 'id';
    if v_conflict is not null then
      raise exception 'item % of % is already stored with other content', v_conflict, v_field
        using errcode = 'PT409';
    end if;
    v_mark := coalesce(v_mark, 0);
    if v_field = 'episodic_memory' then
      v_mark := greatest(v_mark, v_log_mark);
    end if;
    v_count := jsonb_array_length(v_value) - v_mark;
    if v_count <= 0 then
      v_fields := v_fields || jsonb_build_object(v_field, jsonb_build_object(
        'action', 'unchanged', 'items', 0, 'stored', v_mark, 'over_cap', 0));
      continue;
    end if;
    if not p_dry_run then
      v_from := v_mark;
      while v_from < jsonb_array_length(v_value) loop
        v_new := public.memory_slice(v_value, v_from, v_from + v_chunk);
        v_result := public.memory_append_items(v_field, v_new, v_cap, null, p_config);
        v_from := v_from + v_chunk;
      end loop;
    end if;
    v_changed := true;
    v_fields := v_fields || jsonb_build_object(v_field, jsonb_build_object(
      'action', 'append', 'items', v_count, 'stored', v_mark,
      'over_cap', greatest(jsonb_array_length(v_stored) + v_count - v_cap, 0)));
  end loop;

  return jsonb_build_object(
    'changed', v_changed,
    'version', coalesce((v_result ->> 'version')::bigint, (v_row ->> 'version')::bigint, 0),
    'fields', v_fields);
end
$$;

-- The calling user's whole memory as an export holds it: the seven fields, version and
-- updated_at, and the whole conversation log, oldest first (null when there is neither).
create or replace function public.memory_export_document()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  v_document jsonb := public.memory_read_document();
  v_log jsonb;
begin
  select jsonb_agg(l.item order by l.seq) into v_log
    from public.memory_episodes as l where l.user_id = (select auth.uid());
  if v_document is null and v_log is null then
    return null;
  end if;
  return coalesce(v_document, '{}'::jsonb)
    || jsonb_build_object('conversation_log', coalesce(v_log, '[]'::jsonb));
end
$$;

revoke all on function public.memory_import_document(jsonb, jsonb, boolean, integer, text) from public, anon;
revoke all on function public.memory_export_document() from public, anon;
grant execute on function public.memory_import_document(jsonb, jsonb, boolean, integer, text) to authenticated;
grant execute on function public.memory_export_document() to authenticated;

-- ---------------------------------------------------------------------------------------
-- The service's own entry point (MEMORY_BACKEND=postgres/embedded): one round trip per
-- operation. PostgREST is not involved there, so the service impersonates the user itself, as
-- PostgREST would: `role` authenticated and the verified claims, both transaction-local.
--
-- call_as_user sets both in its first statement and runs the operation as its next one. Every
-- PL/pgSQL statement is planned when it runs, so the operation's statements are planned as
-- `authenticated` with the user's claims: RLS applies exactly as through PostgREST (the role is
-- never set inside the statement it protects). Called as one statement in autocommit, both
-- settings end with its implicit transaction, also on error: the pooled connection is back to
-- the login role with no claims.
--
-- It takes claims, so nobody but the service may reach it: a schema PostgREST does not expose
-- (never add it to the API's exposed schemas), nothing for PUBLIC, anon, authenticated or
-- service_role. Its owner (the role that applies this file, the one the service logs in with)
-- executes it; a service logging in as another role needs
--   grant usage on schema memory_private to <role>;
--   grant execute on function memory_private.call_as_user(text, text, jsonb) to <role>;
-- ---------------------------------------------------------------------------------------
create schema if not exists memory_private;
comment on schema memory_private is
  'The memory service''s own entry points (they take verified JWT claims). Never expose it in the API.';
revoke all on schema memory_private from public, anon, authenticated, service_role;

create or replace function memory_private.call_as_user(
  p_claims text,
  p_operation text,
  p_args jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  if (p_claims::jsonb ->> 'role') is distinct from 'authenticated'
     or (p_claims::jsonb ->> 'sub') is null then
    raise exception 'claims of a signed-in user are required' using errcode = '42501';
  end if;
  -- PostgREST's first statement. Everything below runs (and is planned) as this user, who
  -- may not use this schema: nothing below calls into it.
  perform set_config('role', 'authenticated', true),
          set_config('request.jwt.claims', p_claims, true);

  case p_operation
    when 'read_document' then
      return public.memory_read_document();
    when 'read_field' then
      return public.memory_read_field(
        p_args ->> 'field', (p_args ->> 'limit')::integer, p_args ->> 'before');
    when 'chat_context' then
      return public.memory_chat_context(
        (p_args ->> 'history')::integer,
        case jsonb_typeof(p_args -> 'turn_ids')
          when 'array' then array(select jsonb_array_elements_text(p_args -> 'turn_ids'))
        end,
        p_args ->> 'recall_query', coalesce((p_args ->> 'recall_k')::integer, 0),
        coalesce(p_args ->> 'config', 'english'), p_args ->> 'embedding',
        coalesce((p_args ->> 'vector_weight')::double precision, 0.5));
    when 'search' then
      return public.memory_search(
        p_args ->> 'query', (p_args ->> 'limit')::integer,
        coalesce(p_args ->> 'config', 'english'), p_args ->> 'embedding',
        coalesce((p_args ->> 'vector_weight')::double precision, 0.5));
    when 'save_embeddings' then
      return to_jsonb(public.memory_save_embeddings(p_args -> 'embeddings'));
    when 'set_field' then
      return public.memory_set_field(
        p_args ->> 'field', p_args -> 'value', (p_args ->> 'expected_version')::bigint,
        coalesce(p_args ->> 'config', 'english'));
    when 'merge_field' then
      return public.memory_merge_field(
        p_args ->> 'field', p_args -> 'patch', (p_args ->> 'expected_version')::bigint);
    when 'append_items' then
      return public.memory_append_items(
        p_args ->> 'field', p_args -> 'items', (p_args ->> 'cap')::integer,
        p_args ->> 'idempotency_key', coalesce(p_args ->> 'config', 'english'),
        nullif(p_args -> 'embeddings', 'null'));
    when 'remove_item' then
      return public.memory_remove_item(p_args ->> 'field', p_args ->> 'item_id');
    when 'erase' then
      return to_jsonb(public.memory_erase());
    when 'compact' then
      return public.memory_compact(
        p_args ->> 'field',
        case jsonb_typeof(p_args -> 'item_ids')
          when 'array' then array(select jsonb_array_elements_text(p_args -> 'item_ids'))
        end,
        p_args ->> 'summary_field',
        p_args -> 'summary_patch');
    when 'import_document' then
      return public.memory_import_document(
        p_args -> 'document', coalesce(p_args -> 'caps', '{}'::jsonb),
        coalesce((p_args ->> 'dry_run')::boolean, false), (p_args ->> 'chunk')::integer,
        coalesce(p_args ->> 'config', 'english'));
    when 'export_document' then
      return public.memory_export_document();
    -- Guardians and chat limits (see "Guardians (2 of 2)").
    when 'chat_begin_turn' then
      return public.chat_begin_turn(
        (p_args ->> 'history')::integer,
        case jsonb_typeof(p_args -> 'turn_ids')
          when 'array' then array(select jsonb_array_elements_text(p_args -> 'turn_ids'))
        end,
        (p_args ->> 'turns_per_minute')::integer,
        p_args ->> 'recall_query', coalesce((p_args ->> 'recall_k')::integer, 0),
        coalesce(p_args ->> 'config', 'english'), p_args ->> 'embedding',
        coalesce((p_args ->> 'vector_weight')::double precision, 0.5));
    when 'guardian_children' then
      return public.guardian_children();
    when 'guardian_read_document' then
      return public.guardian_read_document((p_args ->> 'child_id')::uuid);
    when 'guardian_set_field' then
      return public.guardian_set_field(
        (p_args ->> 'child_id')::uuid, p_args ->> 'field', p_args -> 'value');
    when 'guardian_append_items' then
      return public.guardian_append_items(
        (p_args ->> 'child_id')::uuid, p_args ->> 'field', p_args -> 'items',
        (p_args ->> 'cap')::integer);
    when 'guardian_remove_item' then
      return public.guardian_remove_item(
        (p_args ->> 'child_id')::uuid, p_args ->> 'field', p_args ->> 'item_id');
    when 'guardian_report_context' then
      return public.guardian_report_context(
        (p_args ->> 'child_id')::uuid, (p_args ->> 'max_episodes')::integer);
    when 'guardian_store_report' then
      return public.guardian_store_report(
        (p_args ->> 'child_id')::uuid, p_args -> 'report', p_args ->> 'after_episode_id',
        (p_args ->> 'cap')::integer);
    when 'guardian_set_chat_limit' then
      return public.guardian_set_chat_limit(
        (p_args ->> 'child_id')::uuid, (p_args ->> 'daily_turns')::integer);
    when 'guardian_erase_child' then
      return to_jsonb(public.guardian_erase_child((p_args ->> 'child_id')::uuid));
    else
      raise exception 'unknown memory operation %', p_operation using errcode = '22023';
  end case;
end
$$;

revoke all on function memory_private.call_as_user(text, text, jsonb)
  from public, anon, authenticated, service_role;

-- Tell PostgREST (Supabase's API) to pick up new functions right away.
notify pgrst, 'reload schema';
