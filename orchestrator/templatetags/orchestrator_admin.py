"""`{% icon "name" "label" %}`: an inline SVG icon (orchestrator.icons) in admin templates."""

from django import template

from ..icons import icon as icon_svg

register = template.Library()


@register.simple_tag
def icon(name: str, label: str = ""):
    return icon_svg(name, label)
