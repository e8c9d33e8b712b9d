"""Credit: from a confirmed violation to a case, a penalty decision, a company's score, the
lists other departments act on (名单) and the exports the city's credit platform accepts.

It reads compliance's violations and evidence; nothing below it imports credit."""
