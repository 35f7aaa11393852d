import django_filters

from ..models import Channel, Message, MessageStatus, Purpose


class MessageFilter(django_filters.FilterSet):
    channel = django_filters.MultipleChoiceFilter(choices=Channel.choices)
    status = django_filters.MultipleChoiceFilter(choices=MessageStatus.choices)
    purpose = django_filters.MultipleChoiceFilter(choices=Purpose.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    source = django_filters.CharFilter()

    class Meta:
        model = Message
        fields = ["channel", "status", "purpose", "since", "until", "source"]
