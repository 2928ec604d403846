//! Word lists for the generated org. Plain data, kept apart so `org.rs` reads as logic.

pub(crate) const FIRST_NAMES: &[&str] = &[
    "Ava", "Liam", "Olivia", "Noah", "Emma", "Mateo", "Sophia", "Lucas", "Isabella", "Ethan", "Mia", "Aiden", "Amelia", "Elijah", "Harper", "James", "Evelyn",
    "Benjamin", "Abigail", "Daniel", "Priya", "Arjun", "Mei", "Hiroshi", "Yuki", "Chen", "Fatima", "Omar", "Aisha", "Kwame", "Amara", "Diego", "Camila",
    "Sofia", "Luca", "Giulia", "Hannah", "Jonas", "Lena", "Felix", "Nora", "Oscar", "Freya", "Erik", "Ingrid", "Mateus", "Beatriz", "Tomás", "Elena", "Ivan",
    "Anya", "Dmitri", "Zara", "Ravi", "Ananya", "Kofi", "Nia", "Samuel", "Grace", "Leo", "Chloe", "Julian", "Maya", "Gabriel", "Layla", "Isaac", "Ruby",
    "Henry", "Alice",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Patel",
    "Kim",
    "Chen",
    "Wang",
    "Tanaka",
    "Suzuki",
    "Okafor",
    "Mensah",
    "Haddad",
    "Khan",
    "Singh",
    "Kowalski",
    "Novak",
    "Rossi",
    "Bianchi",
    "Müller",
    "Schmidt",
    "Larsen",
    "Johansson",
    "Silva",
    "Santos",
    "O'Brien",
    "Murphy",
    "Dubois",
    "Laurent",
    "Ivanova",
    "Petrov",
    "Cohen",
    "Levi",
    "Adeyemi",
    "Bauer",
    "Fischer",
    "Costa",
    "Moreau",
    "Nakamura",
    "Park",
    "Choi",
    "Reyes",
    "Cruz",
];

/// (department, titles). Guests get their own department below.
pub(crate) const DEPARTMENTS: &[(&str, &[&str])] = &[
    ("Engineering", &["Software Engineer", "Senior Software Engineer", "Staff Engineer", "Engineering Manager", "QA Engineer", "Site Reliability Engineer"]),
    ("Product", &["Product Manager", "Senior Product Manager", "Director of Product"]),
    ("Design", &["Product Designer", "UX Researcher", "Design Lead"]),
    ("Marketing", &["Marketing Manager", "Content Strategist", "Growth Marketer"]),
    ("Sales", &["Account Executive", "Sales Development Rep", "Sales Manager"]),
    ("Customer Success", &["Customer Success Manager", "Support Specialist"]),
    ("Finance", &["Financial Analyst", "Controller", "Accountant"]),
    ("People", &["HR Business Partner", "Recruiter", "People Operations Specialist"]),
    ("Legal", &["Counsel", "Paralegal"]),
    ("IT", &["IT Administrator", "Security Engineer", "Systems Administrator"]),
    ("Operations", &["Operations Manager", "Program Manager"]),
];

pub(crate) const GUEST_DEPARTMENT: &str = "External";
pub(crate) const GUEST_TITLES: &[&str] = &["Contractor", "Consultant", "Agency Partner"];

/// Domains for people outside the organization (guests, members of small workspaces only).
pub(crate) const EXTERNAL_DOMAINS: &[&str] = &["gmail.com", "partnerco.io", "contractor.net", "agency.co", "freelance.dev"];

pub(crate) const ORG_NAME: &str = "Example Corp";
pub(crate) const ORG_DOMAIN: &str = "example.com";

pub(crate) const WORKSPACE_NAMES: &[&str] =
    &["Partner Collaboration", "Marketing Agency", "Events Sandbox", "Vendor Portal", "Research Guild", "Community Projects"];

pub(crate) const TEAM_NAMES: &[&str] = &[
    "Engineering",
    "Product",
    "Design",
    "Marketing",
    "Sales",
    "Customer Success",
    "Finance",
    "People",
    "Legal",
    "IT",
    "Operations",
    "Platform",
    "Mobile",
    "Data",
    "Security",
    "Infrastructure",
    "Brand",
    "Enterprise Sales",
    "Onboarding",
    "Recruiting",
    "Partnerships",
    "Events",
    "Compliance",
    "Web",
    "Growth",
];

pub(crate) const TEAM_PURPOSES: &[&str] = &[
    "Planning, roadmaps and weekly updates.",
    "Where the team tracks its projects and requests.",
    "Shared goals, rituals and team-wide announcements.",
    "Intake for requests from the rest of the company.",
    "Quarterly priorities and cross-team work.",
];
