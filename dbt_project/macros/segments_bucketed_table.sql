{#- A table built in buckets of users, one statement per bucket, so that each
    statement's joins fit DuckDB's memory limit (segments/compiler/buckets.py). The
    model reads its inputs through a filter on hash(user_id) % segments_buckets =
    segments_bucket, session variables set here for each bucket and reset after (unset,
    the filter keeps every row). The number of buckets: the users of the model named by
    `bucket_count_from`, divided by `bucket_rows` (the compiler's estimate from the
    columns joined per user; SEGMENTS_BUCKET_ROWS in the environment overrides it).
    Built beside the table and swapped in at the end, in one transaction, like dbt's own
    table materialization. -#}
{% macro segments_bucket_count() -%}
  {%- set configured = env_var('SEGMENTS_BUCKET_ROWS', '') or config.get('bucket_rows', 1000000) -%}
  {%- set per_bucket = [configured | int, 1] | max -%}
  {%- set counted = api.Relation.create(database=this.database, schema=this.schema, identifier=config.get('bucket_count_from')) -%}
  {%- set users = run_query('select count(*) from ' ~ counted).columns[0].values()[0] | int -%}
  {{ return([1, (users + per_bucket - 1) // per_bucket] | max) }}
{%- endmacro %}

{% materialization segments_bucketed_table, adapter='duckdb' %}
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='table') -%}
  {%- set intermediate_relation = make_intermediate_relation(target_relation) -%}
  {%- set backup_relation = make_backup_relation(target_relation, 'table' if existing_relation is none else existing_relation.type) -%}
  {{ drop_relation_if_exists(load_cached_relation(intermediate_relation)) }}
  {{ drop_relation_if_exists(load_cached_relation(backup_relation)) }}
  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {%- set buckets = segments_bucket_count() -%}
  {% call statement('set_buckets') -%}
    set variable segments_buckets = {{ buckets }}
  {%- endcall %}
  {% for bucket in range(buckets) %}
    {% call statement('set_bucket') -%}
      set variable segments_bucket = {{ bucket }}
    {%- endcall %}
    {% if loop.first %}
      {% call statement('main') -%}
        {{ create_table_as(False, intermediate_relation, sql) }}
      {%- endcall %}
    {% else %}
      {% call statement('insert_bucket') -%}
        insert into {{ intermediate_relation }}
        {{ sql }}
      {%- endcall %}
    {% endif %}
  {% endfor %}
  {% call statement('reset_bucket') -%}
    reset variable segments_bucket
  {%- endcall %}
  {% call statement('reset_buckets') -%}
    reset variable segments_buckets
  {%- endcall %}

  {% if existing_relation is not none %}
    {{ adapter.rename_relation(existing_relation, backup_relation) }}
  {% endif %}
  {{ adapter.rename_relation(intermediate_relation, target_relation) }}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do persist_docs(target_relation, model) %}
  {{ adapter.commit() }}
  {{ drop_relation_if_exists(backup_relation) }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
