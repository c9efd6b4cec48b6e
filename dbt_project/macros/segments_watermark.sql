{#- Where an incremental model's rows end: the start of the last day it holds. Its
    query re-reads that day (it may have been partial) and what came after, and
    delete+insert replaces those days. '' when the model is built from scratch: on
    its first build, with --full-refresh (which `segments build` passes when the
    rollup's definition or its history changed), and while dbt only parses. -#}
{% macro segments_watermark() -%}
  {%- if not execute or not is_incremental() -%}
    {{ return('') }}
  {%- endif -%}
  {%- set found = run_query('select max(event_day) from ' ~ this) -%}
  {%- set last_day = found.columns[0].values()[0] -%}
  {{ return('' if last_day is none else last_day ~ ' 00:00:00') }}
{%- endmacro %}
