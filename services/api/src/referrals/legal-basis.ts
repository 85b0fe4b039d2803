/**
 * The legal basis rules, checked on every create and every update (DESIGN.md section 1):
 * - consent: an adult who gave informed consent, recorded with when, how, and with whom it may be shared;
 * - child_safeguarding: a child, or a person whose age is unknown (treated as a child); no consent needed;
 * - duty_to_notify: an adult who did not consent; the record is anonymous, no identity or contact.
 * Each broken rule comes back as a path and a sentence a caseworker can act on.
 */
import type { ReferralInput } from '@haven/schema'
import type { ProblemDetail } from '../errors.ts'

const identityKeys = ['givenName', 'familyName', 'aliases', 'dateOfBirth', 'nationality'] as const

export function legalBasisProblems (input: ReferralInput): ProblemDetail[] {
  const problems: ProblemDetail[] = []
  const { basis } = input.consent
  const age = input.subject.ageGroup
  const adult = age === 'adult'
  if (basis === 'child_safeguarding' && adult) {
    problems.push({ path: '/consent/basis', message: 'Child safeguarding applies to a child or a person whose age is unknown. For an adult, record their consent, or a duty-to-notify if they did not consent.' })
  }
  if (basis === 'consent' && !adult) {
    problems.push({ path: '/consent/basis', message: 'A child, or a person whose age is unknown, is referred under child safeguarding: no consent is needed or recorded.' })
  }
  if (basis === 'duty_to_notify' && !adult) {
    problems.push({ path: '/consent/basis', message: 'Duty to notify is for adults who did not consent. A child, or a person whose age is unknown, is referred under child safeguarding.' })
  }
  if (basis === 'consent') {
    if (input.consent.recordedAt === undefined) problems.push({ path: '/consent/recordedAt', message: 'Record when the person gave their consent.' })
    if (input.consent.method === undefined) problems.push({ path: '/consent/method', message: 'Record how consent was given: verbal or written.' })
    if (input.consent.sharingAllowedWith === undefined) problems.push({ path: '/consent/sharingAllowedWith', message: 'Record who the person agreed their information may be shared with: "any" or a list of agencies.' })
  } else {
    for (const key of ['recordedAt', 'method', 'sharingAllowedWith'] as const) {
      if (input.consent[key] !== undefined) problems.push({ path: `/consent/${key}`, message: `Only a consent referral records ${key}: this referral's basis is ${basis}.` })
    }
  }
  if (basis === 'duty_to_notify') {
    for (const key of identityKeys) {
      if (input.subject[key] !== undefined) problems.push({ path: `/subject/${key}`, message: 'A duty-to-notify record is anonymous: leave out identity details. If the person now consents, change the basis to consent and add them.' })
    }
    if (input.subject.contact !== undefined) problems.push({ path: '/subject/contact', message: 'A duty-to-notify record is anonymous: leave out contact details.' })
  }
  return problems
}

/** Whether the person's consent covers sharing with this agency. Other bases need no consent. */
export const consentCovers = (consent: ReferralInput['consent'], agencyId: string) =>
  consent.basis !== 'consent' || consent.sharingAllowedWith === 'any' || (consent.sharingAllowedWith ?? []).includes(agencyId)
