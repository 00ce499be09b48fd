"""Customer data protection: contact details are masked for roles that do not need them."""
import re


def mask_email(email):
    if not email or "@" not in email:
        return None if not email else "***"
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(phone):
    if not phone:
        return None
    digits = [c for c in phone if c.isdigit()]
    return "***-***-" + "".join(digits[-4:]) if len(digits) >= 4 else "***"


# Keys whose values are customer contact details wherever they appear in before / after.
CONTACT_KEYS = {"request_contact", "contact", "customer_contact", "email", "customer_email",
                "phone", "customer_phone", "recipient", "to"}
WITHHELD = "(withheld)"
MASKED = re.compile(r"\w?\*\*\*@[\w-]+(?:\.[\w-]+)+|\*\*\*-\*\*\*-\d{4}|\*\*\*|\(withheld\)")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"(?<![\w-])(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?![\w-])"
                   r"|(?<![\w-])\+\d[\d\s.-]{7,}\d(?![\w-])")


def mask_contact(text):
    """A contact field as a role without 'view_customer_contact' may see it.

    Free text ("Jane Doe <jane@x.com>, cell 555-867-5309, 12 Elm St") is withheld whole: a
    name, an address or a second number can sit anywhere in it, so only a field that is
    exactly one e-mail address or one phone number keeps its masked shape (j***@x.com,
    ***-***-5309)."""
    if not text:
        return text
    value = text.strip()
    if MASKED.fullmatch(value):  # masked already: masking twice changes nothing
        return value
    if EMAIL.fullmatch(value):
        return mask_email(value)
    if PHONE.fullmatch(value):
        return mask_phone(value)
    return WITHHELD


def redact(value, see_contact):
    """Customer contact details masked for roles without 'view_customer_contact'."""
    if see_contact or value is None:
        return value
    if isinstance(value, dict):
        return {key: (mask_contact(item) if key in CONTACT_KEYS and isinstance(item, str)
                      else redact(item, see_contact)) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, see_contact) for item in value]
    if isinstance(value, str):
        value = EMAIL.sub(lambda m: mask_email(m.group(0)), value)
        return PHONE.sub(lambda m: mask_phone(m.group(0)), value)
    return value
