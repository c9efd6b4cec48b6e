{#- The instant every segment is evaluated at. `segments build` and Dagster set it in
    the SEGMENTS_AS_OF environment variable, read only while a model runs (never while
    dbt parses), so a build at a new as_of reuses dbt's partial parse; `--vars
    '{as_of: ...}'` still wins when given, and a plain `dbt build` uses the run's start. -#}
{% macro segments_as_of() -%}
  {%- if not execute -%}
    {{ return('1970-01-01 00:00:00') }}
  {%- endif -%}
  {{ return(var('as_of', env_var('SEGMENTS_AS_OF', run_started_at.strftime('%Y-%m-%d %H:%M:%S')))) }}
{%- endmacro %}
