{#- A segment's view of the membership, in one statement. dbt's own view
    materialization creates, renames, swaps and drops (four statements and most of a
    node's time); a view holds no data, so replacing it in place is as safe, and a
    build of hundreds of segments pays for hundreds of these nodes. -#}
{% materialization segment_view, default %}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set existing = load_cached_relation(this) -%}
  {{ run_hooks(pre_hooks) }}
  {%- if existing is not none and not existing.is_view -%}
    {{ adapter.drop_relation(existing) }}
  {%- endif -%}
  {% call statement('main') -%}
    create or replace view {{ target_relation }} as {{ sql }}
  {%- endcall %}
  {{ run_hooks(post_hooks) }}
  {% do adapter.commit() %}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
