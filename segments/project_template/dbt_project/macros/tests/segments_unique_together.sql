{#- Fails on every combination of `columns` that appears more than once. -#}
{% test segments_unique_together(model, columns) %}
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
