{#- The instant every segment is evaluated at: `--vars '{as_of: ...}'`, set by
    `segments build` and by Dagster from the schedule's tick, or the run's start. -#}
{% macro segments_as_of() -%}
{{ return(var('as_of', run_started_at.strftime('%Y-%m-%d %H:%M:%S'))) }}
{%- endmacro %}
