import django_filters

from ..models import Channel, Message, MessageStatus, Purpose


class MessageFilter(django_filters.FilterSet):
    # distinct=False: these are columns of the row, no join can repeat it; SELECT DISTINCT would sort the
    # whole match before the page's LIMIT.
    channel = django_filters.MultipleChoiceFilter(choices=Channel.choices, distinct=False)
    status = django_filters.MultipleChoiceFilter(choices=MessageStatus.choices, distinct=False)
    purpose = django_filters.MultipleChoiceFilter(choices=Purpose.choices, distinct=False)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    source = django_filters.CharFilter()

    class Meta:
        model = Message
        fields = ["channel", "status", "purpose", "since", "until", "source"]
