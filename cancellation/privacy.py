"""Customer data protection: contact details are masked for roles that do not need them."""


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
